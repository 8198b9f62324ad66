"""The API checks of docker/build_and_check.sh, against a running localgpt container (standard library only).

    python3 docker/check_api.py URL KEY SENTENCE health   waits for GET /health == 200 (and checks the key is required)
    python3 docker/check_api.py URL KEY SENTENCE speech   POST /results "Say 'SENTENCE' aloud" (Piper), the WAV
                                                          from GET /v1/files/{id}, uploaded by POST /v1/files,
                                                          POST /results "Transcribe the speech in {id}." (whisper):
                                                          the transcript holds SENTENCE
Exit status 0 when the check holds; otherwise what was seen is printed and the status is 1.
"""

from __future__ import annotations

import json
import string
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

HEALTH_TIMEOUT = 600  # seconds: loading SmolLM2 and the catalog on a busy 2-core machine
RUN_TIMEOUT = 900  # seconds: planning with a 135M model plus both experts, on the same machine


def call(url: str, key: str | None, body: Any = None, timeout: float = 10) -> tuple[int, bytes]:
    """(status, body) of one request; a JSON ``body`` makes it a POST."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def words(text: str) -> str:
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def health(base: str, key: str) -> bool:
    start, last = time.monotonic(), ""
    while time.monotonic() - start < HEALTH_TIMEOUT:
        try:
            status, body = call(f"{base}/health", None)
        except OSError as exc:  # not listening yet
            status, body = 0, str(exc).encode()
        if status == 200:
            print(f"   /health 200 after {time.monotonic() - start:.0f}s: {body.decode()}")
            unauthorised, _ = call(f"{base}/v1/models", None)
            status, models = call(f"{base}/v1/models", key)
            ids = [m["id"] for m in json.loads(models)["data"]] if status == 200 else []
            print(f"   /v1/models without the key: {unauthorised}; with it: {status}, {len(ids)} models")
            return unauthorised == 401 and status == 200 and "whisper-tiny-en" in ids
        if body.decode(errors="replace") != last:
            last = body.decode(errors="replace")
            print(f"   /health {status}: {last[:200]}")
        if b'"failed"' in body:
            return False
        time.sleep(2)
    print(f"   /health never answered 200 within {HEALTH_TIMEOUT}s")
    return False


def upload(base: str, key: str, name: str, content: bytes) -> tuple[int, bytes]:
    """POST /v1/files with one file as multipart/form-data."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/v1/files", data=body, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run(base: str, key: str, request: str, files: list[str], task: str) -> dict[str, Any] | None:
    """POST /results; the finished result of the run's ``task`` task (printing every task), or None."""
    start = time.monotonic()
    status, body = call(f"{base}/results", key, {"messages": [{"role": "user", "content": request}], "files": files},
                        timeout=RUN_TIMEOUT)
    print(f"   POST /results {status} in {time.monotonic() - start:.0f}s: {request!r}")
    if status != 200:
        print(f"   {body.decode(errors='replace')[:2000]}")
        return None
    found = None
    for task_id, r in json.loads(body).items():
        chosen = (r.get("choose model result") or {}).get("model")
        print(f"   task {task_id}: {r['task']['task']} by {chosen}: {r['status']} "
              f"{json.dumps(r['inference result'])[:200]}")
        if r["status"] == "done" and r["task"]["task"] == task and found is None:
            found = r
    if found is None:
        print(f"   the run has no finished {task} task")
    return found


def speech(base: str, key: str, sentence: str) -> bool:
    """Speech out of the container's TTS, fetched, uploaded, and transcribed by its ASR: two requests, each a
    one-task plan, so a 135M planner that leaves out the second step of a chained request does not decide it."""
    tts = run(base, key, f"Say '{sentence}' aloud", [], "text-to-speech")
    if tts is None:
        return False
    audio_id = tts["inference result"].get("audio", "")
    status, wav = call(f"{base}/v1/files/{audio_id}", key, timeout=60)
    print(f"   GET /v1/files/{audio_id}: {status}, {len(wav)} bytes, {wav[:4]!r}")
    if status != 200 or wav[:4] != b"RIFF" or len(wav) < 10_000:
        return False
    status, body = upload(base, key, "speech.wav", wav)
    print(f"   POST /v1/files {status}: {body.decode(errors='replace')[:200]}")
    if status != 200:
        return False
    uploaded = json.loads(body)["id"]
    asr = run(base, key, f"Transcribe the speech in {uploaded}.", [uploaded], "automatic-speech-recognition")
    if asr is None:
        return False
    heard = words(asr["inference result"].get("text", ""))
    print(f"   transcript: {heard!r}")
    if words(sentence) not in heard:
        print(f"   the transcript does not hold {words(sentence)!r}")
        return False
    return True


def main(argv: list[str]) -> int:
    base, key, sentence, check = argv
    ok = health(base, key) if check == "health" else speech(base, key, sentence)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
