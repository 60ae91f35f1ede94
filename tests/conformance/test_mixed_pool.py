"""Workers of every selected language on one graph: results flow between languages."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.names import state_name
from tests.support.runs import RunClient as Client

from .conftest import WorkerFactory, selected_sdks


@pytest.mark.timeout(180)
def test_mixed_pool_one_graph_many_languages(
    request: pytest.FixtureRequest, client: Client, start_worker: WorkerFactory
) -> None:
    sdks = selected_sdks(request.config)
    if len(sdks) < 2:
        pytest.skip(f"a mixed pool needs at least two SDKs; selected: {sdks}")
    workers = [start_worker(sdk, slots=4, name=f"{sdk}-mixed") for sdk in sdks]
    for w in workers:
        w.wait_connected()
    infos = client.wait_for_workers(len(sdks), names=[w.worker_name for w in workers])
    language_of = {i.session_id: i.language for i in infos}
    assert sorted(language_of.values()) == sorted(sdks), language_of

    spawns, per_spawn = 10, 50
    values, per_reducer = 500, 20
    nodes: list[dict[str, Any]] = [
        {
            "id": f"sp{i}",
            "agent": "spawn",
            "input": {"count": per_spawn, "child_agent": "value", "child_input": {"value": i + 1}},
            "can_mutate": True,
        }
        for i in range(spawns)
    ]
    nodes += [{"id": f"v{j}", "agent": "value", "input": {"value": j}} for j in range(values)]
    reducers = [f"r{k}" for k in range(values // per_reducer)]
    for k, r in enumerate(reducers):
        deps = [f"v{j}" for j in range(k * per_reducer, (k + 1) * per_reducer)]
        nodes.append({"id": r, "agent": "sum", "deps": deps})
    nodes.append({"id": "gather", "agent": "echo", "input": "all", "deps": reducers})
    nodes.append({"id": "total", "agent": "sum", "deps": reducers})
    nodes.append({"id": "spawned", "agent": "sum", "deps": [f"sp{i}" for i in range(spawns)]})
    run = client.submit(nodes)
    log = client.wait_until_done(run, timeout=150)
    assert log.end_state() == "SUCCEEDED", log.describe()

    status = client.nodes(run)
    results = {k: v.result for k, v in status.items()}
    assert len(status) >= 1000, len(status)
    assert len(status) == len(nodes) + spawns * (per_spawn + 1)
    assert {state_name(n.state) for n in status.values()} == {"SUCCEEDED"}
    assert log.successes() == dict.fromkeys(status, 1)

    # every answer is right, whoever computed it
    for i in range(spawns):
        assert results[f"sp{i}"] == {"spawned": per_spawn}
        assert results[f"sp{i}/join"] == per_spawn * (i + 1)
        for c in range(per_spawn):
            assert results[f"sp{i}/c{c}"] == {"value": i + 1}
    for k, r in enumerate(reducers):
        assert results[r] == sum(range(k * per_reducer, (k + 1) * per_reducer))
    assert results["total"] == sum(range(values))
    assert results["gather"] == {"input": "all", "deps": {r: results[r] for r in reducers}}
    assert results["spawned"] == spawns * per_spawn

    peaks = log.max_in_flight_per_session()
    assert all(peak <= 4 for peak in peaks.values()), f"over a worker's 4 slots: {peaks}"
    # who ran what
    ran_on: dict[str, str] = {}
    for e in log.dispatched():
        d = e.node_dispatched
        assert d.session_id in language_of, f"dispatched to an unknown session: {d}"
        lang = language_of[d.session_id]
        assert d.worker_name == f"{lang}-mixed", d
        ran_on[d.node_id] = lang
    per_language = {lang: sum(1 for v in ran_on.values() if v == lang) for lang in sdks}
    assert all(per_language.values()), f"a language ran no node: {per_language}"
    # results crossed languages: a node consumed a dependency computed in another language
    crossings: dict[tuple[str, str], int] = {}
    for node_id, st in status.items():
        for dep in st.deps:
            pair = (ran_on[dep], ran_on[node_id])
            if pair[0] != pair[1]:
                crossings[pair] = crossings.get(pair, 0) + 1
    assert len(crossings) >= 2, f"too few cross-language edges: {crossings}"
    spawned_across = {(ran_on[st.parent], ran_on[n]) for n, st in status.items() if st.parent}
    assert any(a != b for a, b in spawned_across), "no spawn's children ran in another language"
    print(f"nodes per language: {per_language}; cross-language edges: {crossings}")
