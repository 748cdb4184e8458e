"""Wire codec v1: round trips, limits, and hostile bytes that must only raise ProtocolError."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dataset_stream.protocol import (
    ERROR_CODES,
    Limits,
    ProtocolError,
    decode_batch,
    decode_eval,
    encode_batch,
    encode_eval,
)

SHAPES = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5)
FINITE_F32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    shape = draw(SHAPES)
    if draw(st.booleans()):
        x = draw(hnp.arrays(np.uint8, shape))
    else:
        x = draw(hnp.arrays(np.float32, shape, elements=FINITE_F32))
    y = draw(hnp.arrays(np.int64, (shape[0],), elements=st.integers(0, 2**62)))
    return x, y


def sample_batch(n: int = 4, dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(n, 1, 4, 4)).astype(dtype)
    return x, np.arange(n, dtype=np.int64) % 3


def with_header(payload: bytes, edit: object) -> bytes:
    """Rewrite the JSON header of ``payload`` with ``edit(header)``, keeping the data bytes."""
    (n,) = struct.unpack_from("<Q", payload)
    header = json.loads(payload[8 : 8 + n])
    edit(header)  # type: ignore[operator]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload[8 + n :]


def code_of(payload: object, **kwargs: object) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_batch(payload, **kwargs)  # type: ignore[arg-type]
    assert info.value.code in ERROR_CODES
    return info.value.code


@settings(max_examples=60, deadline=None)
@given(
    data=batches(),
    seq=st.integers(0, 10**18 - 1),
    t=st.floats(-1e12, 1e12, allow_nan=False),
    source=st.text(min_size=1, max_size=20),
    extra=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in ["v", "kind", "seq", "t", "source"]),
        st.text(max_size=8),
        max_size=3,
    ),
)
def test_batch_round_trip(
    data: tuple[np.ndarray, np.ndarray], seq: int, t: float, source: str, extra: dict[str, str]
) -> None:
    x, y = data
    payload = encode_batch(x, y, seq=seq, t=t, source=source, extra=extra)
    batch = decode_batch(payload, sample_shape=x.shape[1:], dtype=x.dtype, last_seq=seq - 1)
    np.testing.assert_array_equal(batch.x, x)
    np.testing.assert_array_equal(batch.y, y)
    assert batch.x.dtype == x.dtype and batch.y.dtype == np.int64
    assert (batch.seq, batch.t, batch.source) == (seq, t, source)
    assert {k: batch.meta[k] for k in extra} == extra
    assert batch.meta["v"] == "1"
    # a plain safetensors reader sees the same tensors
    plain = safetensors.numpy.load(payload)
    assert set(plain) == {"x", "y"}


@settings(max_examples=30, deadline=None)
@given(data=batches())
def test_eval_round_trip(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    ev = decode_eval(encode_eval(x, y, source="digits"), num_classes=int(y.max()) + 1)
    np.testing.assert_array_equal(ev.x, x)
    np.testing.assert_array_equal(ev.y, y)
    assert ev.meta["kind"] == "eval" and ev.source == "digits"


def test_batch_and_eval_are_not_interchangeable() -> None:
    x, y = sample_batch()
    with pytest.raises(ProtocolError) as info:
        decode_eval(encode_batch(x, y, seq=1, t=0.0, source="s"))
    assert info.value.code == "bad_metadata"
    assert code_of(encode_eval(x, y, source="s")) == "bad_metadata"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_protocol_error(payload: bytes) -> None:
    code_of(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_a_valid_length_prefix(body: bytes) -> None:
    code_of(struct.pack("<Q", len(body)) + body)


def test_every_truncation_and_single_byte_flip_raises_only_protocol_error() -> None:
    x, y = sample_batch(n=3)
    payload = encode_batch(x, y, seq=5, t=1.0, source="digits")
    for cut in range(len(payload)):
        code_of(payload[:cut])
    rng = np.random.default_rng(1)
    for position in rng.choice(len(payload), size=200, replace=False):
        mutated = bytearray(payload)
        mutated[position] ^= 1 << int(rng.integers(8))
        try:
            decode_batch(bytes(mutated))
        except ProtocolError as exc:
            assert exc.code in ERROR_CODES


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(["x", "y", "__metadata__", "dtype", "shape", "data_offsets", "v"]),
                children,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_headers_raise_only_protocol_error(header: object) -> None:
    raw = json.dumps(header).encode()
    code_of(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)


def test_oversized_payload_is_rejected_before_parsing() -> None:
    limits = Limits(max_payload_bytes=1024)
    x, y = sample_batch(n=100)
    assert code_of(encode_batch(x, y, seq=1, t=0.0, source="s"), limits=limits) == "too_large"
    # a header that claims 2**63 bytes is refused without allocating it
    assert code_of(struct.pack("<Q", 2**63) + b"{}") == "too_large"


def test_too_many_samples() -> None:
    x, y = sample_batch(n=10)
    payload = encode_batch(x, y, seq=1, t=0.0, source="s")
    assert code_of(payload, limits=Limits(max_samples=9)) == "too_large"
    decode_batch(payload, limits=Limits(max_samples=10))


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"sample_shape": (1, 4, 5)}, "bad_shape"),
        ({"sample_shape": (4, 4)}, "bad_shape"),
        ({"dtype": "float32"}, "bad_dtype"),
        ({"num_classes": 2}, "bad_label"),
        ({"last_seq": 7}, "stale_seq"),
        ({"last_seq": 8}, "stale_seq"),
    ],
)
def test_receiver_expectations(kwargs: dict[str, object], code: str) -> None:
    x, y = sample_batch()
    assert code_of(encode_batch(x, y, seq=7, t=0.0, source="s"), **kwargs) == code
    decode_batch(encode_batch(x, y, seq=7, t=0.0, source="s"), last_seq=6, num_classes=3)


def test_protocol_errors_carry_the_seq_once_it_is_known() -> None:
    x, y = sample_batch()
    payload = encode_batch(x, y, seq=42, t=0.0, source="s")
    for kwargs in ({"last_seq": 42}, {"num_classes": 1}, {"dtype": np.float32}):
        with pytest.raises(ProtocolError) as info:
            decode_batch(payload, **kwargs)  # type: ignore[arg-type]
        assert info.value.seq == 42
        message = info.value.to_message("node-0001")
        assert message["seq"] == 42 and message["code"] == info.value.code


def test_hand_made_payloads_with_bad_contents() -> None:
    x, y = sample_batch(dtype=np.float32)
    meta = {"v": "1", "seq": "1", "t": "0", "source": "s"}

    def payload(tensors: dict[str, np.ndarray], metadata: dict[str, str] = meta) -> bytes:
        return safetensors.numpy.save(tensors, metadata=metadata)

    nan_x = x.copy()
    nan_x[0, 0, 0, 0] = np.nan
    assert code_of(payload({"x": nan_x, "y": y})) == "non_finite"
    assert code_of(payload({"x": x.astype(np.float64), "y": y})) == "bad_dtype"
    assert code_of(payload({"x": x, "y": y.astype(np.int32)})) == "bad_dtype"
    assert code_of(payload({"x": x, "y": -y - 1})) == "bad_label"
    assert code_of(payload({"x": x, "y": y[:-1]})) == "bad_shape"
    assert code_of(payload({"x": x.reshape(-1), "y": y})) == "bad_shape"
    assert code_of(payload({"x": x[:0], "y": y[:0]})) == "bad_shape"
    assert code_of(payload({"x": x, "y": y, "z": y})) == "bad_format"
    assert code_of(payload({"x": x, "y": y}, {**meta, "v": "2"})) == "bad_metadata"
    assert code_of(payload({"x": x, "y": y}, {**meta, "seq": "-1"})) == "bad_metadata"
    assert code_of(payload({"x": x, "y": y}, {**meta, "seq": "01"})) == "bad_metadata"
    assert code_of(payload({"x": x, "y": y}, {**meta, "t": "nan"})) == "bad_metadata"
    assert code_of(payload({"x": x, "y": y}, {k: v for k, v in meta.items() if k != "source"})) == (
        "bad_metadata"
    )
    assert code_of(payload({"x": x, "y": y}, None)) == "bad_metadata"  # type: ignore[arg-type]
    decode_batch(payload({"x": x, "y": y}))  # producers may omit "kind"


def test_header_offsets_that_lie_are_bad_format() -> None:
    x, y = sample_batch()
    good = encode_batch(x, y, seq=1, t=0.0, source="s")

    def shift(header: dict[str, dict[str, list[int]]]) -> None:
        header["y"]["data_offsets"][1] += 8

    def grow(header: dict[str, dict[str, list[int]]]) -> None:
        header["x"]["shape"][0] += 1

    assert code_of(with_header(good, shift)) == "bad_format"
    assert code_of(with_header(good, grow)) in {"bad_format", "bad_shape"}


def test_not_bytes() -> None:
    assert code_of("not bytes") == "bad_format"
    assert code_of(None) == "bad_format"


@pytest.mark.parametrize(
    ("x", "y", "code"),
    [
        (np.zeros((2, 3), np.float64), np.zeros(2, np.int64), "bad_dtype"),
        (np.zeros((2, 3), np.uint8), np.zeros(2, np.float32), "bad_dtype"),
        (np.zeros((2, 3), np.uint8), np.zeros(3, np.int64), "bad_shape"),
        (np.zeros(3, np.uint8), np.zeros(3, np.int64), "bad_shape"),
        (np.zeros((2, 3), np.uint8), -np.ones(2, np.int64), "bad_label"),
        (np.full((2, 3), np.inf, np.float32), np.zeros(2, np.int64), "non_finite"),
    ],
)
def test_encoder_refuses_what_a_decoder_would_refuse(
    x: np.ndarray, y: np.ndarray, code: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        encode_batch(x, y, seq=1, t=0.0, source="s")
    assert info.value.code == code


def test_encoder_refuses_bad_metadata() -> None:
    x, y = sample_batch()
    for kwargs in (
        {"seq": -1, "t": 0.0, "source": "s"},
        {"seq": True, "t": 0.0, "source": "s"},
        {"seq": 1, "t": float("nan"), "source": "s"},
        {"seq": 1, "t": 0.0, "source": ""},
        {"seq": 1, "t": 0.0, "source": "s", "extra": {"seq": "2"}},
    ):
        with pytest.raises(ProtocolError) as info:
            encode_batch(x, y, **kwargs)  # type: ignore[arg-type]
        assert info.value.code == "bad_metadata"


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        Limits(max_samples=0)
    with pytest.raises(ValueError, match="unknown protocol error code"):
        ProtocolError("nope", "x")
