"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Cloudflare R2).

``settings`` (where the bucket is and how to reach it), ``threads`` (the
bucket's own thread pool), ``bucket`` (``Bucket``: asynchronous object
operations over a botocore client), ``transfer`` (the blocking halves of
streamed uploads and downloads), ``keys`` (the key layout), ``records``
(per-project records and cached pages, shared by every daemon on the bucket).
"""
