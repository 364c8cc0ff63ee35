"""`make ... HUB=1` goes online: the Makefile exports the Hub switches off, and with them off a
model id reaches huggingface_hub's real download path (the HTTP call itself is mocked)."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def _make_env(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))}
    out = subprocess.run(["make", "-s", "--no-print-directory", "show-env", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_makefile_is_offline_unless_hub_is_set():
    assert _make_env() == "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1"
    assert _make_env("HUB=1") == "HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0"


PROBE = r"""
import httpx2 as httpx, json, sys
sys.path.insert(0, ".")
urls = []
def send(self, request, *a, **k):          # the network call: recorded, then refused
    urls.append(str(request.url))
    raise httpx.ConnectError("no network in tests", request=request)
httpx.Client.send = send
import time
time.sleep = lambda _s: None                 # huggingface_hub's retry back-off: the retries stay, the waits go
from eval.data import DataSource
from eval.models import model_family
try:
    model_family("facebook/opt-125m")
except FileNotFoundError as err:
    message = str(err)
print(json.dumps({"urls": urls, "message": message, "data_offline": DataSource.from_config("data").offline}))
"""


def test_with_the_hub_on_a_model_id_goes_through_huggingface_hub(tmp_path):
    import json
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HOME": str(tmp_path),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert any("huggingface.co" in u and "facebook/opt-125m" in u for u in got["urls"]), got["urls"]
    assert "neither a local folder nor reachable on the Hub" in got["message"]
    assert got["data_offline"] is False
