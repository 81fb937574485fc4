"""One SQS scenario through boto3, run against an endpoint given as argv[1].

Run by tests/sdk_compat.rs with a current boto3 (JSON protocol) and with
boto3 1.26.165 (Query protocol). botocore checks MD5OfMessageBody and
MD5OfMessageAttributes itself, so a wrong digest fails the send or receive.
Prints the protocol, then one line per check and a closing tally.
"""
import sys
import time
import uuid

import boto3
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
print("protocol:", sqs.meta.service_model.protocol)
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok  ", name)
    else:
        failed += 1
        print("FAIL", name, detail)


name = "boto-" + uuid.uuid4().hex[:10]
url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "5"},
                       tags={"team": "core"})["QueueUrl"]
check("create and get url", sqs.get_queue_url(QueueName=name)["QueueUrl"] == url)
check("listed", url in sqs.list_queues(QueueNamePrefix=name).get("QueueUrls", []))
attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
check("attributes", attrs.get("VisibilityTimeout") == "5" and "QueueArn" in attrs, attrs)
check("tags", sqs.list_queue_tags(QueueUrl=url).get("Tags") == {"team": "core"})

body = 'xml-unsafe <&> "quotes" \' cr\r lf\n tab\t unicode \u00e9\u2603'
sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={
    "s": {"DataType": "String", "StringValue": "v<&>"},
    "n": {"DataType": "Number", "StringValue": "42"},
    "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
})
check("send returns digests", "MD5OfMessageAttributes" in sent and "MessageId" in sent)
batch = sqs.send_message_batch(QueueUrl=url, Entries=[
    {"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two"}])
check("batch send", len(batch.get("Successful", [])) == 2 and not batch.get("Failed"), batch)

got = []
deadline = time.time() + 10
while len(got) < 3 and time.time() < deadline:
    r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                            AttributeNames=["All"], MessageAttributeNames=["All"])
    got += r.get("Messages", [])
check("received all", len(got) == 3, len(got))
first = next((m for m in got if m["MessageId"] == sent["MessageId"]), None)
check("body byte for byte", first is not None and first["Body"] == body,
      first and repr(first["Body"]))
check("attributes round trip", first is not None and
      first["MessageAttributes"]["b"]["BinaryValue"] == b"\x00\x01\xff" and
      first["MessageAttributes"]["s"]["StringValue"] == "v<&>" and
      first["Attributes"]["ApproximateReceiveCount"] == "1", first)

other = [m for m in got if m is not first]
sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=other[0]["ReceiptHandle"],
                              VisibilityTimeout=0)
again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2, AttributeNames=["All"])
again = again.get("Messages", [])
check("visible again after change to 0", len(again) == 1 and
      again[0]["Attributes"]["ApproximateReceiveCount"] == "2", again)
deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
    {"Id": "x", "ReceiptHandle": first["ReceiptHandle"]},
    {"Id": "y", "ReceiptHandle": other[1]["ReceiptHandle"]},
    {"Id": "z", "ReceiptHandle": again[0]["ReceiptHandle"]}])
check("batch delete", len(deleted.get("Successful", [])) == 3, deleted)

try:
    sqs.get_queue_url(QueueName=name + "-missing")
    check("missing queue is an error", False)
except ClientError as e:
    code = e.response["Error"]["Code"]
    check("missing queue is an error", code in (
        "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"), code)
try:
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "same", "MessageBody": "1"},
                                                  {"Id": "same", "MessageBody": "2"}])
    check("repeated batch ids are refused", False)
except ClientError as e:
    check("repeated batch ids are refused",
          "BatchEntryIdsNotDistinct" in e.response["Error"]["Code"], e.response["Error"])

sqs.purge_queue(QueueUrl=url)
sqs.delete_queue(QueueUrl=url)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
