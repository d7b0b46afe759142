"""A local OpenID Connect issuer for the keyless CI tests: discovery document and JWKS over HTTP on 127.0.0.1.

Keys are made per issuer with ``cryptography``; tokens are shaped like GitHub Actions' and GitLab CI's
(headers and claims as those services document them). The issuer can rotate its keys, go slow, or
stop answering.
"""

import base64
import hashlib
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


class LocalIssuer:
    """An issuer at http://127.0.0.1:<port> publishing the public halves of ``self.published``."""

    def __init__(self):
        self.keys = {}  # kid -> private key
        self.published = []  # kids in the JWKS
        self.delay = 0.0
        self.jwks_uri = None  # None: its own /.well-known/jwks
        self.requests = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                issuer.requests.append(self.path)
                if issuer.delay:
                    time.sleep(issuer.delay)
                if self.path == "/.well-known/openid-configuration":
                    jwks_uri = issuer.jwks_uri or f"{issuer.url}/.well-known/jwks"
                    body = {"issuer": issuer.url, "jwks_uri": jwks_uri}
                elif self.path == "/.well-known/jwks":
                    body = {"keys": [issuer.jwk(kid) for kid in issuer.published]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the portal gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.add_key()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def add_key(self, kind="rsa", publish=True):
        key = rsa_key() if kind == "rsa" else ec_key()
        kid = uuid.uuid4().hex[:16]
        self.keys[kid] = key
        if publish:
            self.published.append(kid)
        return kid

    def rotate(self):
        """Publish a new key and withdraw every old one; return the new key id."""
        kid = self.add_key()
        self.published = [kid]
        return kid

    def jwk(self, kid):
        key = self.keys[kid].public_key()
        if isinstance(key, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
            jwk["alg"] = "RS256"
        else:
            jwk = ECAlgorithm.to_jwk(key, as_dict=True)
            jwk["alg"] = "ES256"
        return {**jwk, "kid": kid, "use": "sig"}

    @property
    def current_kid(self):
        return self.published[-1]

    def sign(self, claims, *, kid=None, alg=None, key=None, headers=None):
        kid = kid or self.current_kid
        private = key or self.keys[kid]
        alg = alg or ("ES256" if isinstance(private, ec.EllipticCurvePrivateKey) else "RS256")
        header = {"kid": kid, **(headers or {})}
        return jwt.encode(claims, private, algorithm=alg, headers=header)

    def github_token(self, *, audience, repository="octo-org/octo-repo", now=None, **overrides):
        """A token shaped like GitHub Actions' (https://docs.github.com/actions/security-for-github-actions)."""
        now = int(now or time.time())
        owner = repository.split("/")[0]
        claims = {
            "jti": str(uuid.uuid4()),
            "sub": f"repo:{repository}:ref:refs/heads/main",
            "aud": audience,
            "ref": "refs/heads/main",
            "sha": "example_sha_3d0f1c2b",
            "repository": repository,
            "repository_owner": owner,
            "repository_owner_id": "65",
            "repository_visibility": "private",
            "repository_id": "35",
            "actor_id": "12",
            "actor": "octocat",
            "workflow": "deploy",
            "head_ref": "",
            "base_ref": "",
            "event_name": "push",
            "ref_protected": "true",
            "ref_type": "branch",
            "workflow_ref": f"{repository}/.github/workflows/deploy.yml@refs/heads/main",
            "workflow_sha": "example_sha_3d0f1c2b",
            "job_workflow_ref": f"{repository}/.github/workflows/deploy.yml@refs/heads/main",
            "job_workflow_sha": "example_sha_3d0f1c2b",
            "runner_environment": "github-hosted",
            "run_id": "7283946401",
            "run_number": "10",
            "run_attempt": "1",
            "iss": self.url,
            "nbf": now - 5,
            "exp": now + 300,
            "iat": now,
        }
        claims.update(overrides)
        # GitHub's header also names the key's certificate thumbprint.
        thumbprint = base64.urlsafe_b64encode(hashlib.sha1(self.current_kid.encode()).digest()).rstrip(b"=")
        return self.sign(claims, headers={"typ": "JWT", "x5t": thumbprint.decode()})

    def gitlab_token(self, *, audience, project="my-group/my-project", now=None, **overrides):
        """A token shaped like GitLab CI's ``id_tokens`` (https://docs.gitlab.com/ci/secrets/id_token_authentication/)."""
        now = int(now or time.time())
        claims = {
            "namespace_id": "72",
            "namespace_path": project.split("/")[0],
            "project_id": "20",
            "project_path": project,
            "user_id": "1",
            "user_login": "sample-user",
            "user_email": "sample-user@example.com",
            "user_access_level": "developer",
            "pipeline_id": "574",
            "pipeline_source": "push",
            "job_id": "302",
            "ref": "main",
            "ref_type": "branch",
            "ref_path": "refs/heads/main",
            "ref_protected": "true",
            "runner_id": 1,
            "runner_environment": "self-hosted",
            "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
            "project_visibility": "private",
            "ci_config_ref_uri": f"gitlab.example.com/{project}//.gitlab-ci.yml@refs/heads/main",
            "ci_config_sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
            "iss": self.url,
            "sub": f"project_path:{project}:ref_type:branch:ref:main",
            "aud": audience,
        }
        claims.update(overrides)
        return self.sign(claims, headers={"typ": "JWT"})


class SilentServer:
    """Accepts connections and never answers: an issuer that hangs."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def close(self):
        self.socket.close()


def closed_port_url():
    """Return a loopback URL nothing listens on: an issuer that is down."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"
