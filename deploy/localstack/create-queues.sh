#!/bin/sh
# Creates the worker queue and its dead-letter queue, with maxReceiveCount 3
# (as SQSD_MAX_RETRIES in docker-compose.yml). The endpoint comes from
# AWS_ENDPOINT_URL; region and credentials from the AWS CLI's usual settings.
set -eu
sqs() { aws --endpoint-url "$AWS_ENDPOINT_URL" sqs "$@"; }
dlq_url=$(sqs create-queue --queue-name worker-queue-dlq --query QueueUrl --output text)
dlq_arn=$(sqs get-queue-attributes --queue-url "$dlq_url" \
  --attribute-names QueueArn --query Attributes.QueueArn --output text)
policy="{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":\\\"3\\\"}"
sqs create-queue --queue-name worker-queue \
  --attributes "{\"RedrivePolicy\":\"$policy\"}" --query QueueUrl --output text
echo "created worker-queue with dead-letter queue worker-queue-dlq"
