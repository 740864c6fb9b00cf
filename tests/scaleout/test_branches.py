"""Branches across two processes: a branch made on one is continued, described and filtered
on the other, because each stored turn carries its parent."""

from __future__ import annotations

import asyncio

from tests.scaleout.cluster import Cluster
from tests.scaleout.test_scaleout import (
    get_json,
    has_turns,
    http_clients,
    new_conv,
    poll_json,
    post_run,
    user_texts,
    viewer,
)


async def test_branches_made_on_one_process_are_whole_on_the_other(cluster: Cluster) -> None:
    conv_id = new_conv("branch")
    path = f"/api/conversations/{conv_id}"
    async with asyncio.timeout(60), http_clients(cluster) as (a, b):
        async with viewer(cluster.a, conv_id) as on_a:
            first = await post_run(a, conv_id, "one")
            assert (await on_a.read_run(first["inference_id"]))["type"] == "run.finished"
            second = await post_run(a, conv_id, "two")
            assert (await on_a.read_run(second["inference_id"]))["type"] == "run.finished"
            t1, t2 = first["turn_id"], second["turn_id"]

            # B regenerates A's last answer: a sibling of A's turn.
            await poll_json(b, path, has_turns(2))
            again = await post_run(b, conv_id, "two", parent_turn_id=t1)
            assert again["parent_turn_id"] == t1
            assert (await on_a.read_run(again["inference_id"]))["type"] == "run.finished"
            t3 = again["turn_id"]

            # A sees the tree as B left it, and edits the first message (a new root).
            info = await poll_json(a, path, has_turns(3))
            assert info["children"][t1] == [t2, t3] and info["tip"] == t3
            edited = await post_run(a, conv_id, "one, edited", parent_turn_id="")
            assert (await on_a.read_run(edited["inference_id"]))["type"] == "run.finished"
            t4 = edited["turn_id"]

            # B continues the branch nobody is on any more, with that branch's history only.
            await poll_json(b, path, has_turns(4))
            more = await post_run(b, conv_id, "three", parent_turn_id=t2)
            assert (await on_a.read_run(more["inference_id"]))["type"] == "run.finished"
            t5 = more["turn_id"]

        for http in (a, b):
            info = await poll_json(http, path, has_turns(5))
            assert [t["id"] for t in info["turns"]] == [t1, t2, t3, t4, t5]
            assert [t["metadata"]["parent_turn_id"] for t in info["turns"]] == [
                None,
                t1,
                t1,
                None,
                t2,
            ]
            assert info["children"][""] == [t1, t4] and info["tip"] == t5
            assert user_texts(info["turns"][-1]) == ["one", "two", "three"]
            branch = await get_json(http, path, branch=t3)
            assert [t["id"] for t in branch["turns"]] == [t1, t3]
            frames = (await get_json(http, f"{path}/timeline", branch=t5))["frames"]
            assert {f["turn_id"] for f in frames} == {t1, t2, t5}
