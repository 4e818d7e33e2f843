"""llama.cpp miners on one machine share its cores (``miners.cores``) instead of each
running as many threads as the machine has."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from miners import cores
from miners.cores import CoreShare, usable_cores
from miners.engines import GenerationRequest, complete, start_engine
from tasks.settings import Settings


@pytest.fixture
def recount_now(monkeypatch):
    monkeypatch.setattr(cores, "RECOUNT_S", 0.0)


def test_the_cores_are_divided_among_the_contexts_on_the_machine(tmp_path, recount_now):
    first = CoreShare(tmp_path, contexts=1, cores=8)
    assert first.threads() == 8  # alone
    second = CoreShare(tmp_path, contexts=1, cores=8)
    assert (first.threads(), second.threads()) == (4, 4)
    third = CoreShare(tmp_path, contexts=2, cores=8)  # a miner of two slots
    assert (first.threads(), third.threads()) == (2, 2)
    second.leave()
    third.leave()
    assert first.threads() == 8  # they left: the cores are its own again
    crowd = [CoreShare(tmp_path, contexts=4, cores=8) for _ in range(3)]
    assert first.threads() == 1  # never fewer than one thread
    for share in crowd:
        share.leave()


def test_a_dead_miner_s_share_is_swept_and_not_counted(tmp_path, recount_now):
    (tmp_path / "4242-deadbeef.share").write_text("3")  # nobody holds its lock
    share = CoreShare(tmp_path, contexts=1, cores=4)
    assert share.contexts_on_machine() == 1
    assert [p.name for p in tmp_path.glob("*.share")] == [share._file.name]


def test_without_a_directory_an_engine_has_the_cores_to_itself(tmp_path):
    assert CoreShare(None, contexts=2, cores=6).threads() == 3
    (tmp_path / "file").write_text("")
    unusable = CoreShare(tmp_path / "file" / "dir", contexts=1, cores=6)  # logged, not fatal
    assert unusable.threads() == 6


def test_usable_cores_follow_the_affinity_and_a_cgroup_quota(tmp_path: Path):
    assert usable_cores(tmp_path / "none") == len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert usable_cores(tmp_path / "cpu.max") == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path / "cpu.max") == len(os.sched_getaffinity(0))


def threads_of(engine) -> list[int]:
    """The threads each of the engine's llama.cpp contexts runs, as llama.cpp says."""
    import llama_cpp

    return [llama_cpp.llama_n_threads(llm._ctx.ctx) for llm in list(engine._free.queue)]


@pytest.mark.llamacpp
def test_two_llama_cpp_miners_on_one_machine_share_its_cores(tmp_path, recount_now):
    """As ``make run`` and the README's second miner start them: same MIA_DATA_DIR."""
    machine = usable_cores()
    if machine < 2:
        pytest.skip("one core: nothing to divide")
    settings = Settings(data_dir=str(tmp_path), slots=1)
    ask = GenerationRequest([{"role": "user", "content": "Hi"}], max_tokens=1, temperature=0.0)
    first = start_engine("llamacpp", settings)
    try:
        assert threads_of(first) == [machine]
        second = start_engine("llamacpp", settings)
        try:
            assert threads_of(second) == [machine // 2]
            complete(first, ask)  # its context, lent again, runs its new share
            assert threads_of(first) == [machine // 2]
        finally:
            second.close()
        complete(first, ask)
        assert threads_of(first) == [machine]  # the other one left
    finally:
        first.close()


@pytest.mark.llamacpp
def test_fixed_threads_that_oversubscribe_the_machine_are_warned_of(tmp_path, caplog):
    machine = usable_cores()
    settings = Settings(data_dir=str(tmp_path), slots=1, llama_threads=machine)
    first = start_engine("llamacpp", settings)
    try:
        with caplog.at_level(logging.WARNING, logger="miners.engines.llamacpp"):
            second = start_engine("llamacpp", settings)
        second.close()
    finally:
        first.close()
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "oversubscribe" in warning and "MIA_LLAMA_THREADS=0" in warning
