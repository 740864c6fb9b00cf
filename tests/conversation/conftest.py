import pytest

from webchat.transport import InMemoryTransport, RedisStreamsTransport


@pytest.fixture
async def memory_transport():
    transport = InMemoryTransport()
    yield transport
    await transport.close()


@pytest.fixture(params=["memory", "redis"])
async def any_transport(request):
    if request.param == "memory":
        transport = InMemoryTransport()
    else:
        transport = RedisStreamsTransport(request.getfixturevalue("redis_url"))
    yield transport
    await transport.close()
