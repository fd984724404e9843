"""An S3-compatible object store on a loopback address (moto's server, in a thread), for
the tests of blob storage on several machines. Every store gets a bucket of its own.

    with ObjectStore() as store:
        store.url        # a MAILSUITE_BLOB_STORAGE value naming the bucket
        store.objects()  # {key: bytes} of everything in the bucket
"""
import uuid

# boto3 signs every request; moto accepts any key. The same variables reach child
# processes through their environment.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "mailsuite-test", "AWS_SECRET_ACCESS_KEY": "mailsuite-test-secret"}
REGION = "us-east-1"


class ObjectStore:
    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.bucket = f"blobs-{uuid.uuid4().hex[:12]}"
        self.server = None

    def __enter__(self):
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *exc):
        self.server.stop()

    @property
    def endpoint(self):
        return f"http://{self.host}:{self.port}"

    @property
    def url(self):
        return f"s3://{self.bucket}?endpoint={self.endpoint}&region={REGION}&addressing=path"

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self):
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def objects(self):
        client = self.client()
        return {key: client.get_object(Bucket=self.bucket, Key=key)["Body"].read() for key in self.keys()}
