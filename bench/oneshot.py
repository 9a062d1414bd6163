"""The do-it-yourself baseline: one grant refreshed the way Lucid's own sample code does it
(lucidsoftware/sample-lucid-rest-applications, audit-logs-ingestor/oauth2.py), adapted to keep
the refresh token in a Kubernetes Secret. A scheduler (cron, a CronJob) starts this process once
per grant per refresh: it starts Python, loads the kubernetes client and a kubeconfig, reads the
stored refresh token, refreshes it with httpx, and writes both tokens back.

    python -m bench.oneshot --kubeconfig K --namespace NS --secret NAME --lucid URL
    (LUCID_CLIENT_ID and LUCID_CLIENT_SECRET in the environment)
"""

from __future__ import annotations

import argparse
import base64
import os

import httpx
from kubernetes import client, config


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.oneshot")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--secret", required=True, help="holds refresh_token and access_token")
    parser.add_argument("--lucid", required=True, help="Lucid API base URL")
    args = parser.parse_args(argv)

    config.load_kube_config(config_file=args.kubeconfig)
    core = client.CoreV1Api()
    secret = core.read_namespaced_secret(args.secret, args.namespace)
    refresh_token = base64.b64decode((secret.data or {})["refresh_token"]).decode()
    response = httpx.post(
        f"{args.lucid.rstrip('/')}/oauth2/token",
        json={
            "refresh_token": refresh_token,
            "client_id": os.environ["LUCID_CLIENT_ID"],
            "client_secret": os.environ["LUCID_CLIENT_SECRET"],
            "grant_type": "refresh_token",
        },
        timeout=10,
    )
    response.raise_for_status()
    tokens = response.json()
    core.patch_namespaced_secret(
        args.secret,
        args.namespace,
        {
            "data": {
                "refresh_token": b64(tokens["refresh_token"]),
                "access_token": b64(tokens["access_token"]),
            }
        },
    )


if __name__ == "__main__":
    main()
