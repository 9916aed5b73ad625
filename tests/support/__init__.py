"""Helpers shared by every test directory; no tests live here.

processes      free ports, waiting for a port, stopping or killing a child process
servers        redis-server and moto's S3 server on free ports (the session fixtures' engines)
s3_client      the tests' own S3 client, new buckets, listing a bucket
fault_proxy    an HTTP proxy in front of moto that injects S3 faults
tusd_process   `python -m tusd_py` as a child process, its endpoint and output
tus_requests   tus requests over httpx: HEAD, download with SHA-256, wait for a stable offset,
               check that a finished upload reads back whole
socket_http    HTTP/1.1 over a bare socket: short bodies, slow bodies, hang-ups
source_files   files to upload, with their bytes and digest
payloads       bytes to upload in-process, their SHA-256, request bodies in chunks
in_process     the app in-process behind an httpx client, and its store
store_servers  a real server process on each store (file, s3, azure) and what each store holds
tus_js_client  tus-js-client's Node build uploading a file (tests/e2e/js/upload.mjs)
"""
