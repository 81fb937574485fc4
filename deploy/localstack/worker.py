"""A tiny worker application: logs every POST sqsd makes and answers 200.

A body containing "fail" gets a 500, to watch retries and the dead-letter
queue at work.
"""
import http.server
import os


class Worker(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        sqsd = {k: v for k, v in self.headers.items() if k.lower().startswith("x-aws-sqsd")}
        status = 500 if b"fail" in body else 200
        print(f"{self.path} -> {status} {sqsd} body={body.decode(errors='replace')!r}", flush=True)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Worker).serve_forever()
