"""A proxy in front of an SQS endpoint that checks every request's SigV4
signature with botocore's signer (an implementation independent of the
daemon's), then passes the request on.

Usage: sigv4_check_proxy.py UPSTREAM_URL ACCESS_KEY SECRET_KEY SESSION_TOKEN REGION [SKEW_S]

With SKEW_S, the proxy's clock runs that many seconds ahead of this machine's:
its answers carry that time in `Date`, and, as AWS does, it refuses a
signature dated more than 5 minutes off with 403 SignatureDoesNotMatch
("Signature expired").

Prints "listening PORT" once ready. GET /__report answers with JSON:
{"verified": {"<X-Amz-Target or Action>": count}, "failures": ["..."],
 "expired": {"<X-Amz-Target or Action>": count}}.
"""

import calendar
import email.utils
import http.client
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

UPSTREAM = urllib.parse.urlsplit(sys.argv[1])
CREDENTIALS = Credentials(sys.argv[2], sys.argv[3], sys.argv[4])
REGION = sys.argv[5]
SKEW_S = int(sys.argv[6]) if len(sys.argv) > 6 else 0

lock = threading.Lock()
verified = {}
failures = []
expired = {}


def proxy_now():
    return time.time() + SKEW_S


def expiry_problem(amz_date):
    """AWS's message when the signature's date is too far from its clock."""
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return "unreadable X-Amz-Date %r" % amz_date
    if abs(signed_at - proxy_now()) > 300:
        return "Signature expired: %s is not within 5 minutes of %s" % (
            amz_date,
            time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(proxy_now())),
        )
    return None


def check(method, path, headers, body):
    """None when the signature holds, else why not."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 authorization header: %r" % auth
    fields = dict(
        part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(",")
    )
    amz_date = headers.get("X-Amz-Date", "")
    scope = "%s/%s/%s/sqs/aws4_request" % (CREDENTIALS.access_key, amz_date[:8], REGION)
    if fields.get("Credential") != scope:
        return "credential scope %r, expected %r" % (fields.get("Credential"), scope)
    signed = fields.get("SignedHeaders", "").split(";")
    for needed in ("host", "x-amz-date"):
        if needed not in signed:
            return "%s is not signed (%s)" % (needed, signed)
    if CREDENTIALS.token and "x-amz-security-token" not in signed:
        return "the session token is not signed (%s)" % signed
    # Rebuild the request with exactly the headers the client says it signed.
    request = AWSRequest(
        method=method,
        url="http://%s%s" % (headers.get("Host"), path),
        data=body,
        headers={name: headers.get(name, "") for name in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(CREDENTIALS, "sqs", REGION)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if fields.get("Signature") != expected:
        return "signature mismatch; canonical request as botocore sees it:\n%s" % canonical
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def date_time_string(self, timestamp=None):
        return email.utils.formatdate(proxy_now(), usegmt=True)

    def refuse(self, message):
        data = json.dumps(
            {"__type": "com.amazonaws.sqs#SignatureDoesNotMatch", "message": message}
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-query-error", "SignatureDoesNotMatch;Sender")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/__report":
            self.send_error(404)
            return
        with lock:
            data = json.dumps(
                {"verified": verified, "failures": failures, "expired": expired}
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        operation = self.headers.get("X-Amz-Target") or "query:" + (
            urllib.parse.parse_qs(body.decode()).get("Action", ["?"])[0]
        )
        problem = check("POST", self.path, self.headers, body)
        stale = expiry_problem(self.headers.get("X-Amz-Date", ""))
        with lock:
            if problem is not None:
                failures.append("%s: %s" % (operation, problem))
            elif stale is not None:
                expired[operation] = expired.get(operation, 0) + 1
            else:
                verified[operation] = verified.get(operation, 0) + 1
        if problem is not None or stale is not None:
            self.refuse(problem or stale)
            return
        upstream = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        forwarded = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
        }
        upstream.request("POST", self.path, body=body, headers=forwarded)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for k, v in answer.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("listening %d" % server.server_address[1], flush=True)
server.serve_forever()
