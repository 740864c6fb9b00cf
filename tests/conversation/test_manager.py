import asyncio

import pytest

from tests.support.connections import RecordingConnection
from webchat.conversation.builder import EngineBuilder
from webchat.conversation.manager import ConversationManager
from webchat.conversation.subscribers import SubscriberFactory
from webchat.errors import ConversationBusyError
from webchat.profiles import Profile, ProfileRegistry
from webchat.turns import BlockKind

PROFILES = ProfileRegistry(
    [
        Profile(slug="default", default_prompt="One.", allow_overrides=True, tools=["calculator"]),
        Profile(slug="other", default_prompt="Two.", allow_overrides=True),
        Profile(
            slug="slow",
            allow_overrides=True,
            step_settings={"tokens_per_second": 200, "answer_tokens": 100_000},
        ),
    ]
)


@pytest.fixture
async def manager(any_transport):
    manager = ConversationManager(
        EngineBuilder(PROFILES, any_transport), SubscriberFactory(any_transport)
    )
    yield manager
    await manager.close()


async def run_to_end(conversation, prompt: str):
    return await conversation.start_run(prompt).wait()


async def test_identical_inputs_reuse_the_same_conversation_and_engine(manager):
    first = await manager.get_or_create("c1", "default", {"system_prompt": "Hi."})
    engine = first.engine
    again = await manager.get_or_create("c1", "default", {"system_prompt": "Hi."})
    assert again is first and again.engine is engine
    assert first.rebuilds == 0 and manager.builds == 1


async def test_profile_change_rebuilds(manager):
    conversation = await manager.get_or_create("c1", "default")
    old_engine, old_signature = conversation.engine, conversation.signature
    same = await manager.get_or_create("c1", "other")
    assert same is conversation
    assert conversation.engine is not old_engine
    assert conversation.signature != old_signature
    assert conversation.profile_slug == "other"
    assert conversation.rebuilds == 1


async def test_override_change_rebuilds(manager):
    conversation = await manager.get_or_create("c1", "default")
    engine = conversation.engine
    await manager.get_or_create("c1", "default", {"system_prompt": "Different."})
    assert conversation.engine is not engine and conversation.rebuilds == 1
    assert conversation.config.system_prompt == "Different."


async def test_join_never_rebuilds(manager):
    conversation = await manager.get_or_create("c1", "default", {"system_prompt": "Custom."})
    joined = await manager.join("c1", "other")
    assert joined is conversation and conversation.rebuilds == 0
    assert conversation.config.system_prompt == "Custom."
    created = await manager.join("c2", "other")
    assert created.profile_slug == "other"


async def test_history_clients_and_seq_survive_a_rebuild(manager):
    conversation = await manager.get_or_create("c1", "default")
    client = RecordingConnection()
    conversation.attach(client, since=0)
    await run_to_end(conversation, "calc: 6*7")
    async with asyncio.timeout(5):
        await client.wait_for_type("run.finished")
    session_id = conversation.session.session_id

    await manager.get_or_create("c1", "other")
    assert conversation.rebuilds == 1
    second = await run_to_end(conversation, "and now?")
    async with asyncio.timeout(5):
        await client.wait_for_type("run.finished", 2)

    assert conversation.session.session_id == session_id
    assert len(conversation.session.turns) == 2
    user_texts = [b.text for b in second.blocks if b.kind == BlockKind.USER]
    assert user_texts == ["calc: 6*7", "and now?"]
    assert conversation.pool.count == 1 and client.closed is None
    seqs = [e["seq"] for e in client.events()]
    assert seqs == sorted(set(seqs)), "seq must strictly increase across the rebuild"
    assert client.types().count("chat.user_message") == 2
    assert "tool.result" in client.types()


async def test_shared_in_memory_subscription_is_never_closed(memory_transport):
    manager = ConversationManager(
        EngineBuilder(PROFILES, memory_transport), SubscriberFactory(memory_transport)
    )
    try:
        conversation = await manager.get_or_create("c1", "default")
        shared = conversation.subscription
        await manager.get_or_create("c1", "other")
        await manager.get_or_create("c1", "default", {"system_prompt": "again"})
        assert conversation.rebuilds == 2
        assert conversation.subscription is shared
        assert not conversation.close_on_replace
        assert not shared.closed
        client = RecordingConnection()
        conversation.attach(client)
        await run_to_end(conversation, "still streaming?")
        async with asyncio.timeout(5):
            await client.wait_for_type("run.finished")
    finally:
        await manager.close()
    assert shared.closed  # released when the conversation goes away


async def test_concurrent_get_or_create_builds_once(manager):
    results = await asyncio.gather(*(manager.get_or_create("c1", "default") for _ in range(50)))
    assert all(r is results[0] for r in results)
    assert manager.builds == 1 and len(manager) == 1


async def test_config_change_during_a_run_does_not_swap_the_engine(manager):
    conversation = await manager.get_or_create("c1", "slow")
    engine, signature = conversation.engine, conversation.signature
    client = RecordingConnection()
    conversation.attach(client)
    handle = conversation.start_run("talk for a while")
    async with asyncio.timeout(5):
        await client.wait_for_type("llm.delta")
    with pytest.raises(ConversationBusyError) as info:
        await manager.get_or_create("c1", "slow", {"system_prompt": "switch now"})
    assert info.value.details["inference_id"] == handle.inference_id
    assert conversation.engine is engine and conversation.signature == signature
    assert conversation.rebuilds == 0
    handle.cancel()
    async with asyncio.timeout(5):
        await client.wait_for_type("run.cancelled")


async def test_eviction_frees_only_idle_conversations(manager):
    idle = await manager.get_or_create("idle", "default")
    watched = await manager.get_or_create("watched", "default")
    watched.attach(RecordingConnection())
    running = await manager.get_or_create("running", "slow")
    handle = running.start_run("long")
    later = asyncio.get_running_loop().time() + manager.evict_after + 1
    evicted = await manager.evict_idle(now=later)
    assert evicted == ["idle"]
    assert manager.find("idle") is None
    assert manager.find("watched") is watched and manager.find("running") is running
    assert idle.pool.count == 0
    handle.cancel()


async def test_has_ended_sees_a_terminal_frame_among_recent_frames(manager):
    from webchat.conversation.frames import Frame

    conversation = await manager.get_or_create("c1", "default")
    base = conversation.last_seq + 4
    # Clock-derived seqs are sparse: a frame a few ms later is tens of thousands of seqs away.
    frames = [Frame(seq=base, type="run.finished", data={}, conv_id="c1", inference_id="run-a")]
    frames += [
        Frame(seq=base + 40_000 * (i + 1), type="log", data={}, conv_id="c1", inference_id="run-b")
        for i in range(3)
    ]
    conversation.buffer.extend(frames)
    assert conversation.has_ended("run-a")
    assert not conversation.has_ended("run-b")
