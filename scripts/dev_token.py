#!/usr/bin/env python3
"""Print a dev JWT (HS256) for the local stack: dev_token.py SECRET SUB TENANT_ID [HOURS].

Standard library only. The claims are the ones tenancy.pre_request() expects.
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    secret, sub, tenant = sys.argv[1:4]
    hours = int(sys.argv[4]) if len(sys.argv) == 5 else 12
    now = int(time.time())
    claims = {"sub": sub, "tenant_id": tenant, "role": "authenticated", "type": "access",
              "email": f"{sub[:8]}@example.test", "iat": now, "exp": now + hours * 3600}
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    print(f"{head}.{body}.{b64url(sig)}")


if __name__ == "__main__":
    main()
