"""The C limit for "take an HTTP body onto disk": nginx writing each PATCH body to a file.

nginx (Debian's nginx-light) reads the whole body into a file under the upload directory
(`client_body_in_file_only`), then answers 204 through a body-less internal proxy hop, since
nginx reads a body only for a module that wants it. POST answers 201 with a Location, so the
benchmark's curl client (POST, then one PATCH) feeds it exactly as it feeds the tus servers.
That is all it speaks: no HEAD offsets, no chunked resumes, so curl is its only client.

    python -m benchmarks.nginx_limit --dir /tmp/nginx-uploads

The socket is bound here and handed to nginx (its `NGINX` variable, the one its binary upgrade
uses), so the "listening on" line is printed before exec yet no request can meet a closed
port. `master_process off` keeps every byte in this one process, whose CPU time and memory the
benchmark reads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
from pathlib import Path

CONFIG = """\
{user}daemon off;
worker_processes 1;
error_log stderr warn;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_max_body_size 0;
    client_body_temp_path {uploads};
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /files/ {{
            add_header Location /files/$request_id always;
            return 201;
        }}
        location /files/ {{
            client_body_in_file_only on;
            proxy_pass http://127.0.0.1:{port}/written/;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Length $content_length;
        }}
        location /written/ {{
            add_header Upload-Offset $http_x_length always;
            return 204;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="where the bodies land")
    args = parser.parse_args()
    binary = nginx_binary()
    if binary is None:
        raise SystemExit("nginx is not installed (apt-get install nginx-light)")
    uploads = Path(args.dir).resolve()
    uploads.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    conf = work / "nginx.conf"
    # As root, nginx's worker would become `nobody`, which cannot enter a private work directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(CONFIG.format(user=user, work=work, uploads=uploads, port=port))
    os.environ["NGINX"] = f"{sock.fileno()};"
    print(f"nginx limit listening on http://127.0.0.1:{port}/files/", flush=True)
    os.execv(binary, [binary, "-p", str(work), "-c", str(conf)])


if __name__ == "__main__":
    main()
