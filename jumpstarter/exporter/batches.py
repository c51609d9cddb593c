"""A streaming call's responses: what a generator's producer (generators.py) has ready, sent one item a message
or, to a client that takes them, many items a message (``StreamingDriverCallResponse.items``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.generators import ERROR, ITEM, MAX_ASK_AHEAD, AskedTooMuch, Producer
from jumpstarter.exporter.replies import encode_or_fail, fail, refuse, reply_id
from jumpstarter.v1 import jumpstarter_pb2
from jumpstarter.values import MAX_DEPTH, ValueTypeError, encode, pack_paths
from jumpstarter.values import Path as ValuePath

# A batch ends at this many items or once past this many bytes: a fast generator's items share messages, a big
# item goes alone.
BATCH_ITEMS = 256
BATCH_BYTES = 256 * 1024

_NOTHING = object()


async def responses(
    producer: Producer,
    batches: bool,
    lookahead: int | None,
    where: str,
    context: ServicerContext,
    progress: list[int] | None = None,
) -> AsyncIterator[jumpstarter_pb2.StreamingDriverCallResponse]:
    """The responses of a streaming call: what the producer has ready, waiting only for the first item.
    ``lookahead``: let the producer run that far beyond what was sent (None: the client paces it).
    ``progress[0]``: kept at the items sent."""
    sent = 0
    while True:
        entries = await producer.take(BATCH_ITEMS if batches else 1)
        items = [value for kind, value, _ in entries if kind == ITEM]
        if items:
            if batches:
                encoded, unsendable = _batches(items)
                for response in encoded:
                    yield response
                if unsendable is not _NOTHING:  # fails the call as unbatched, after the items before it
                    await encode_or_fail(unsendable, jumpstarter_pb2.StreamingDriverCallResponse(), where, context)
            else:
                response = jumpstarter_pb2.StreamingDriverCallResponse(uuid=reply_id())
                await encode_or_fail(items[0], response, where, context)
                yield response
            sent += len(items)
            if progress is not None:
                progress[0] = sent
            if lookahead is not None:
                producer.allow(sent + 1 + lookahead)
        if len(items) < len(entries):  # the end, last of the entries
            kind, value, _ = entries[-1]
            if isinstance(value, AskedTooMuch):
                await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(value))
            if kind == ERROR:
                await fail(value, where, context)
            return


def close_with_call(producer: Producer, context: ServicerContext) -> None:
    """Stop ``producer`` as soon as the call ends, however it ends: a cancelled call (or a client gone) may leave
    the call's own code waiting inside gRPC, its ``finally`` for later."""
    context.add_done_callback(lambda _call: producer.close())


def asked_too_much(wanted: int, sent: int, where: str) -> AskedTooMuch:
    return AskedTooMuch(
        f"{where}: a paced call asked for {wanted} items with {sent} sent; it may ask for at most {MAX_ASK_AHEAD} "
        "beyond those sent (jumpstarter.exporter.generators.MAX_ASK_AHEAD)"
    )


def _batches(items: list[Any]) -> tuple[list[jumpstarter_pb2.StreamingDriverCallResponse], Any]:
    """``items`` encoded into batches of at most BATCH_BYTES (or one bigger item each); and the first item
    that can't be sent (_NOTHING when all can), which ends them."""
    responses = []
    response, size = jumpstarter_pb2.StreamingDriverCallResponse(), 0
    ints: list[ValuePath] = []
    i = 0
    while i < len(items):
        values = response.items
        index, mark = len(values), len(ints)
        value = values.add()
        try:
            encode(items[i], value, ints, (index,), MAX_DEPTH + 1)  # the path's first step is the item's index
        except ValueTypeError:
            del values[-1]
            if index:
                _pack(response, ints[:mark])
                responses.append(response)
            return responses, items[i]
        size += value.ByteSize()
        if size > BATCH_BYTES and index:  # too much with this one: it goes first in the next message
            del values[-1]
            _pack(response, ints[:mark])
            responses.append(response)
            response, ints, size = jumpstarter_pb2.StreamingDriverCallResponse(), [], 0
            continue
        i += 1
    _pack(response, ints)
    responses.append(response)
    return responses, _NOTHING


def _pack(response: jumpstarter_pb2.StreamingDriverCallResponse, ints: list[ValuePath]) -> None:
    if ints:
        pack_paths(ints, response.int_paths)
