"""An old-style miner that polls over HTTP instead of consuming a Celery queue.

    python -m miners.legacy [--miner-id ID] [--poll-s 2] [--wait-s 0] [--slots 1]
                            [--state-file PATH]

It registers with ``POST /register_miner`` (the cluster's registration token, as
for push miners), then each of its ``--slots`` threads loops: ``GET /get_work``;
on 204 sleep ``--poll-s`` (or, with ``--wait-s``, long-poll again at once); on a
job run it on the same engines as push miners and ``POST /submit_result``. A key
the web tier no longer knows (401) means registering again. Its id and key are kept
in a state file (``miners.legacy_state``), so a restart renews the same id with its
key, with or without ``--miner-id``, instead of registering a new one.

SIGINT/SIGTERM: it takes no more work. ``POST /unregister_miner`` ends its long-polls
at once and the web tier leases it nothing new; the jobs in hand are run and submitted,
then it exits. A job whose miner dies is re-leased by the web tier once its lease
expires, so nothing is lost either way.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import requests

from miners.engines import Engine, GenerationRequest, complete, load_engine
from miners.engines.lexical import LexicalEngine
from miners.legacy_identity import Identity, RegistrationFailed, StateBusy, StateFile
from tasks import logs
from tasks.settings import Settings

log = logging.getLogger("miners.legacy")

RETRY_S = 1.0


class LegacyMiner:
    """Polls ``/get_work``, runs jobs on ``engine``, hands results to ``/submit_result``."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        miner_id: str = "",
        poll_s: float = 2.0,
        wait_s: float = 0.0,
        slots: int = 1,
        state: StateFile | None = None,
    ) -> None:
        self.settings = settings
        self.identity = Identity(settings, miner_id, state)
        self.engine = engine
        self.lexical = LexicalEngine(settings.projects_file)
        self.poll_s = poll_s
        self.wait_s = wait_s
        self.slots = max(slots, 1)
        self.stopping = threading.Event()
        self.done = 0
        self._api = settings.api_url.rstrip("/")
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        """Poll with ``slots`` threads until ``stop()``; returns when they are done."""
        self.register()
        threads = [
            threading.Thread(target=self._loop, name=f"legacy-{i}", daemon=True)
            for i in range(self.slots)
        ]
        for thread in threads:
            thread.start()
        log.info(
            "legacy miner %s polling %s every %gs (wait %gs, %d slots, engine %s)",
            self.miner_id,
            self._api,
            self.poll_s,
            self.wait_s,
            self.slots,
            self.engine.name,
        )
        self.stopping.wait()
        self.identity.leave()
        for thread in threads:  # each ends once its job in hand (if any) is submitted
            thread.join()
        log.info("legacy miner %s stopped after %d jobs", self.miner_id, self.done)

    def stop(self) -> None:
        self.stopping.set()

    def register(self, refused_key: str | None = None) -> None:
        self.identity.register(refused_key)

    @property
    def miner_id(self) -> str:
        return self.identity.miner_id

    @property
    def _key(self) -> str | None:
        return self.identity.key

    # -- the polling loop ------------------------------------------------------------

    def _loop(self) -> None:
        http = requests.Session()
        while not self.stopping.is_set():
            try:
                work = self._get_work(http)
            except (requests.RequestException, RegistrationFailed) as exc:
                log.warning("get_work failed: %s", exc)
                self.stopping.wait(RETRY_S)
                continue
            if work is None:
                if self.wait_s <= 0:
                    self.stopping.wait(self.poll_s)
                continue
            try:
                body = self.execute(work)
            except Exception as exc:  # noqa: BLE001 - the job gets the error, the loop goes on
                log.exception("job %s could not run", work.get("job_id"))
                body = {"job_id": work["job_id"], "lease_id": work["lease_id"], "error": str(exc)}
            self._submit(http, work, body)

    def _get_work(self, http: requests.Session) -> dict[str, Any] | None:
        params = {"wait": self.wait_s} if self.wait_s > 0 else {}
        key = self._key
        response = http.get(
            f"{self._api}/get_work",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
            timeout=self.wait_s + 10,
        )
        if response.status_code == 401:
            log.warning("key refused (%s); registering again", response.text.strip())
            self.register(refused_key=key)
            return None
        if response.status_code == 204:
            return None
        response.raise_for_status()
        work: dict[str, Any] = response.json()
        return work

    def execute(self, work: dict[str, Any]) -> dict[str, Any]:
        """Run one job on the engine; the ``/submit_result`` body (a result or an error)."""
        body: dict[str, Any] = {"job_id": work["job_id"], "lease_id": work["lease_id"]}
        if work.get("classifier") == "lexical":  # stage 1 of the assistant: no engine
            project, choices = work.get("project") or "", work.get("choices") or []
            label = self.lexical.classify(work["prompt"], project, choices)
            return {**body, "response": label, "engine": "lexical", "finish_reason": "stop"}
        model = work.get("model") or ""
        if model and model not in self.engine.models:
            served = ", ".join(self.engine.models)
            return {**body, "error": f"miner {self.miner_id} does not serve {model!r} ({served})"}
        request = GenerationRequest(
            work["messages"],
            int(work["max_tokens"]),
            float(work["temperature"]),
            seed=work.get("seed"),
            top_p=float(work.get("top_p") or 1.0),
            stop=tuple(work.get("stop") or ()),
            choices=tuple(work.get("choices") or ()),
        )
        started = time.perf_counter()
        try:
            result = complete(self.engine, request)
        except Exception as exc:  # noqa: BLE001 - the caller gets the engine's error
            log.exception("job %s failed", work["job_id"])
            return {**body, "error": f"{type(exc).__name__}: {exc}"}
        return {
            **body,
            "response": result.text,
            "model": model or (self.engine.models[0] if self.engine.models else ""),
            "engine": self.engine.name,
            "inference_ms": round((time.perf_counter() - started) * 1000, 3),
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
            },
            "finish_reason": result.finish_reason,
        }

    def _submit(self, http: requests.Session, work: dict[str, Any], body: dict[str, Any]) -> None:
        """Hand the result in, retrying while the lease lasts; a refusal is final."""
        job_id = work["job_id"]
        deadline = float(work["lease_expires_at"])
        registered_again = False
        while True:
            try:
                key = self._key
                response = http.post(
                    f"{self._api}/submit_result",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=10,
                )
                if response.status_code == 401 and not registered_again:
                    registered_again = True
                    self.register(refused_key=key)  # same miner id, new key: the lease stays
                    continue
            except (requests.RequestException, RegistrationFailed) as exc:
                if time.time() >= deadline:  # stopping or not: the job is in hand
                    log.error("job %s: could not submit its result: %s", job_id, exc)
                    return
                log.warning("job %s: submit failed (%s); retrying", job_id, exc)
                time.sleep(RETRY_S)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if time.time() < deadline:
                    log.warning(
                        "job %s: submit answered %s; retrying", job_id, response.status_code
                    )
                    time.sleep(RETRY_S)
                    continue
            if response.ok:
                with self._lock:
                    self.done += 1
                log.info("ran job %s (attempt %s)", job_id, work.get("attempt"))
            else:
                log.warning(
                    "job %s: result refused (%s): %s", job_id, response.status_code, response.text
                )
            return


def main(argv: list[str] | None = None) -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m miners.legacy", description=__doc__)
    parser.add_argument("--miner-id", default=settings.miner_id, help="default: one is assigned")
    parser.add_argument("--poll-s", type=float, default=settings.legacy_poll_s)
    parser.add_argument("--wait-s", type=float, default=settings.legacy_wait_s, help="long-poll")
    parser.add_argument("--slots", type=int, default=settings.slots)
    parser.add_argument("--state-file", default=settings.legacy_state_file, help="its id, key")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logs.configure(getattr(logging, args.loglevel.upper(), logging.INFO), settings.log_format)
    try:
        state = StateFile.claim(
            settings.with_overrides(legacy_state_file=args.state_file), args.miner_id
        )
    except StateBusy as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    miner_id = args.miner_id or state.read()[0]  # without --miner-id: the one it had
    engine = load_engine(settings).engine
    miner = LegacyMiner(
        settings, engine, miner_id, args.poll_s, args.wait_s, args.slots, state=state
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: taking no more work, finishing the jobs in hand", signum)
        miner.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    miner.run()


if __name__ == "__main__":
    main()
