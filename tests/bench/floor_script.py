"""The floor: one client_credentials POST with requests, one write with boto3, nothing else.

FLOOR_CLIENT=botocore builds the client with botocore alone (no boto3, no s3transfer),
as rotator's ``AwsClients`` does.

Configured like rotator (ROTATOR_TOKEN_URL, ROTATOR_CLIENT_ID, ROTATOR_CLIENT_SECRET; AWS
endpoint and region from boto3's own variables). FLOOR_TARGET is ``secretsmanager`` (one
PutSecretValue on FLOOR_SECRET_ID, which must exist) or ``ssm`` (one PutParameter on
FLOOR_PARAMETER).
"""

import os
from typing import Any

import requests

if os.environ.get("FLOOR_CLIENT") == "botocore":
    import botocore.session

    client: Any = botocore.session.get_session().create_client
else:
    import boto3

    client = boto3.client

response = requests.post(
    os.environ["ROTATOR_TOKEN_URL"],
    data={
        "grant_type": "client_credentials",
        "client_id": os.environ["ROTATOR_CLIENT_ID"],
        "client_secret": os.environ["ROTATOR_CLIENT_SECRET"],
    },
    timeout=10,
)
response.raise_for_status()
if os.environ.get("FLOOR_TARGET", "secretsmanager") == "ssm":
    client("ssm").put_parameter(
        Name=os.environ["FLOOR_PARAMETER"],
        Value=response.text,
        Type="SecureString",
        Overwrite=True,
    )
else:
    client("secretsmanager").put_secret_value(
        SecretId=os.environ["FLOOR_SECRET_ID"], SecretString=response.text
    )
