"""Wire codec v1 for inference: infer requests, sample ids on batches, the prediction message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dataset_stream.protocol import (
    ERROR_CODES,
    ErrorMessage,
    ForeignMessage,
    Limits,
    Prediction,
    ProtocolError,
    decode_batch,
    decode_eval,
    decode_infer,
    encode_batch,
    encode_eval,
    encode_infer,
    load_schema,
    read_node_message,
    validate_prediction,
)
from dataset_stream.protocol.values import BatteryState

SHAPES = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5)
FINITE_F32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)
META = {"v": "1", "kind": "infer", "seq": "3", "t": "10.0", "source": "s"}


@st.composite
def samples(draw: st.DrawFn) -> np.ndarray:
    shape = draw(SHAPES)
    if draw(st.booleans()):
        return draw(hnp.arrays(np.uint8, shape))
    return draw(hnp.arrays(np.float32, shape, elements=FINITE_F32))


def infer_code(payload: object, **kwargs: object) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_infer(payload, **kwargs)  # type: ignore[arg-type]
    assert info.value.code in ERROR_CODES
    return info.value.code


def raw(tensors: dict[str, np.ndarray], metadata: dict[str, str] = META) -> bytes:
    return safetensors.numpy.save(tensors, metadata=metadata)


@settings(max_examples=60, deadline=None)
@given(
    x=samples(),
    seq=st.integers(0, 10**18 - 1),
    t=st.floats(-1e12, 1e12, allow_nan=False),
    with_ids=st.booleans(),
    data=st.data(),
)
def test_infer_round_trip(
    x: np.ndarray, seq: int, t: float, with_ids: bool, data: st.DataObject
) -> None:
    ids = None
    if with_ids:
        pool = data.draw(
            st.lists(st.integers(0, 2**63 - 1), min_size=len(x), max_size=len(x), unique=True)
        )
        ids = np.array(pool, dtype=np.int64)
    payload = encode_infer(x, seq=seq, t=t, source="cam", ids=ids, extra={"note": "a"})
    request = decode_infer(payload, sample_shape=x.shape[1:], dtype=x.dtype)
    np.testing.assert_array_equal(request.x, x)
    assert request.x.dtype == x.dtype
    assert (request.seq, request.t, request.source) == (seq, t, "cam")
    assert request.meta["kind"] == "infer" and request.meta["note"] == "a"
    if ids is None:
        assert request.ids is None
        assert set(safetensors.numpy.load(payload)) == {"x"}
    else:
        assert request.ids is not None
        np.testing.assert_array_equal(request.ids, ids)


def test_batches_may_carry_sample_ids() -> None:
    x = np.zeros((3, 2, 2), np.uint8)
    y = np.array([0, 1, 2])
    ids = np.array([7, 5, 9])
    batch = decode_batch(encode_batch(x, y, seq=1, t=0.0, source="s", ids=ids), num_classes=3)
    assert batch.ids is not None and batch.ids.tolist() == [7, 5, 9]
    assert decode_batch(encode_batch(x, y, seq=1, t=0.0, source="s")).ids is None
    # an eval set has no ids
    with pytest.raises(ProtocolError) as info:
        decode_eval(raw({"x": x, "y": y, "ids": ids}, {"v": "1", "kind": "eval", "source": "s"}))
    assert info.value.code == "bad_format"


def test_kinds_are_not_interchangeable() -> None:
    x = np.zeros((2, 3), np.uint8)
    y = np.zeros(2, np.int64)
    assert infer_code(encode_batch(x, y, seq=1, t=0.0, source="s")) == "bad_metadata"
    assert infer_code(encode_eval(x, y, source="s")) == "bad_metadata"
    with pytest.raises(ProtocolError) as info:
        decode_batch(encode_infer(x, seq=1, t=0.0, source="s"))
    assert info.value.code == "bad_metadata"
    # kind says infer but labels came along: refused, not silently dropped
    assert infer_code(raw({"x": x, "y": y})) == "bad_format"
    # infer must say so: a payload without kind is a batch
    assert infer_code(raw({"x": x}, {k: v for k, v in META.items() if k != "kind"})) == (
        "bad_metadata"
    )


def test_hand_made_infer_payloads_with_bad_contents() -> None:
    x = np.ones((4, 1, 3), np.float32)
    nan_x = x.copy()
    nan_x[1, 0, 2] = np.inf
    ids = np.arange(4, dtype=np.int64)
    cases = [
        ({"x": nan_x}, META, "non_finite"),
        ({"x": x.astype(np.float64)}, META, "bad_dtype"),
        ({"x": x.reshape(-1)}, META, "bad_shape"),
        ({"x": x[:0]}, META, "bad_shape"),
        ({"x": x, "z": ids}, META, "bad_format"),
        ({"y": ids}, META, "bad_format"),
        ({"x": x, "ids": ids.astype(np.int32)}, META, "bad_dtype"),
        ({"x": x, "ids": ids[:3]}, META, "bad_shape"),
        ({"x": x, "ids": ids.reshape(2, 2)}, META, "bad_shape"),
        ({"x": x, "ids": ids - 1}, META, "bad_metadata"),
        ({"x": x, "ids": np.array([1, 2, 2, 3])}, META, "bad_metadata"),
        ({"x": x}, {**META, "v": "2"}, "bad_metadata"),
        ({"x": x}, {**META, "seq": "-1"}, "bad_metadata"),
        ({"x": x}, {**META, "t": "inf"}, "bad_metadata"),
        ({"x": x}, {k: v for k, v in META.items() if k != "source"}, "bad_metadata"),
    ]
    for tensors, meta, code in cases:
        assert infer_code(raw(tensors, meta)) == code, (sorted(tensors), meta)
    decode_infer(raw({"x": x, "ids": ids}))


def test_receiver_expectations_and_limits() -> None:
    x = np.zeros((5, 1, 4), np.uint8)
    payload = encode_infer(x, seq=9, t=0.0, source="s")
    assert infer_code(payload, sample_shape=(1, 5)) == "bad_shape"
    assert infer_code(payload, dtype=np.float32) == "bad_dtype"
    assert infer_code(payload, limits=Limits(max_samples=4)) == "too_large"
    assert infer_code(payload, limits=Limits(max_payload_bytes=64)) == "too_large"
    decode_infer(payload, limits=Limits(max_samples=5), sample_shape=(1, 4), dtype=np.uint8)
    # once the seq is read, a failure carries it (the node answers with infer_seq)
    with pytest.raises(ProtocolError) as info:
        decode_infer(payload, dtype=np.float32)
    assert info.value.seq == 9


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"x": np.zeros((2, 3), np.float64)}, "bad_dtype"),
        ({"x": np.zeros(3, np.uint8)}, "bad_shape"),
        ({"x": np.full((2, 3), np.nan, np.float32)}, "non_finite"),
        ({"ids": np.array([1, 1])}, "bad_metadata"),
        ({"ids": np.array([-1, 1])}, "bad_metadata"),
        ({"ids": np.array([1.0, 2.0])}, "bad_dtype"),
        ({"ids": np.array([1, 2, 3])}, "bad_shape"),
        ({"seq": -1}, "bad_metadata"),
        ({"t": float("inf")}, "bad_metadata"),
        ({"source": ""}, "bad_metadata"),
        ({"extra": {"kind": "batch"}}, "bad_metadata"),
    ],
)
def test_encoder_refuses_what_a_decoder_would_refuse(kwargs: dict[str, object], code: str) -> None:
    args: dict[str, object] = {"x": np.zeros((2, 3), np.uint8), "seq": 1, "t": 0.0, "source": "s"}
    args |= kwargs
    x = args.pop("x")
    with pytest.raises(ProtocolError) as info:
        encode_infer(x, **args)  # type: ignore[arg-type]
    assert info.value.code == code


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_error(payload: bytes) -> None:
    infer_code(payload)


def test_every_truncation_and_byte_flip_raises_only_protocol_error() -> None:
    payload = encode_infer(
        np.arange(12, dtype=np.float32).reshape(3, 4),
        seq=5,
        t=1.0,
        source="s",
        ids=np.array([3, 1, 2]),
    )
    for cut in range(len(payload)):
        infer_code(payload[:cut])
    rng = np.random.default_rng(2)
    for position in rng.choice(len(payload), size=200, replace=False):
        mutated = bytearray(payload)
        mutated[position] ^= 1 << int(rng.integers(8))
        try:
            request = decode_infer(bytes(mutated))
        except ProtocolError as exc:
            assert exc.code in ERROR_CODES
        else:
            assert request.x.ndim >= 2 and np.isfinite(request.x).all()


PREDICTION = {
    "device": "node-0001",
    "seq": 4,
    "t": 1764000000.0,
    "classes": [3, 1],
    "confidence": [0.9, 0.5],
    "ids": [11, 12],
    "latency_s": {"frozen": 0.004, "adaptive": 0.0001, "total": 0.0041},
    "energy_j": {"frozen": 0.0002, "adaptive": 0.00001, "total": 0.00021},
    "battery": {"soc": 0.9, "remaining_j": 35000.0},
}


def test_prediction_round_trip_and_schema() -> None:
    assert load_schema("prediction")["$schema"].endswith("2020-12/schema")
    message = Prediction.from_json(json.dumps({**PREDICTION, "model_note": "kept"}))
    assert message.classes == (3, 1) and message.ids == (11, 12) and not message.repeated
    assert message.battery == BatteryState(0.9, 35000.0)
    assert json.loads(message.to_json()) == {**PREDICTION, "model_note": "kept"}
    again = Prediction(**{**PREDICTION, "battery": None, "ids": None, "repeated": True})  # type: ignore[arg-type]
    assert json.loads(again.to_json())["repeated"] is True
    assert "ids" not in json.loads(again.to_json())


@pytest.mark.parametrize(
    "edit",
    [
        {"classes": [3]},  # fewer classes than confidences
        {"ids": [1]},
        {"confidence": [0.9, 1.5]},
        {"classes": [-1, 2]},
        {"energy_j": {"frozen": 0.1, "total": 0.1}},
        {"seq": "4"},
        {"device": "a/b"},
    ],
)
def test_bad_predictions_are_bad_format(edit: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as info:
        Prediction.from_json({**PREDICTION, **edit})
    assert info.value.code == "bad_format"


def test_predictions_and_infer_errors_are_read_as_node_messages() -> None:
    body = json.dumps(PREDICTION).encode()
    device, message = read_node_message("vega", "vega/node-0001/prediction", body)
    assert device == "node-0001" and isinstance(message, Prediction)
    validate_prediction(body)
    with pytest.raises(ForeignMessage):
        read_node_message("vega", "vega/node-0002/prediction", body)
    with pytest.raises(ForeignMessage):
        read_node_message("vega", "vega/node-0001/infer", b"")
    error = ErrorMessage("node-0001", "depleted", "no energy", infer_seq=4)
    _, back = read_node_message("vega", "vega/node-0001/error", error.to_json())
    assert isinstance(back, ErrorMessage) and back.answers_infer and back.seq is None
    with pytest.raises(ValueError, match="infer_seq"):
        ErrorMessage("node-0001", "bad_shape", "x", seq=1, infer_seq=1)
