"""Over-the-air simulation (numpy) and the torch transformations for EOT: alignment, seeding,
equivalence of the two implementations, gradients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from advmir.codecs import CodecSettingError, parse_setting
from advmir.codecs.differentiable import (
    CodecProxy,
    RandomTransform,
    RealCodec,
    RoomChannel,
    apply_channel_torch,
    build_random_transform,
    random_transform,
    straight_through,
)
from advmir.codecs.room import apply_channel, band_response, fft_size, make_rooms, parse_room, simulate
from conftest import best_lag

SR = 16000
SMALL_ROOM = {
    "n_rooms": 3,
    "room_dim_m": [[3, 3, 2.5], [5, 4, 3]],
    "absorption": [0.4, 0.7],
    "distance_m": [0.5, 1.5],
}


def noise_clips(n: int = 4, length: int = 8000, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal((n, length))).astype(np.float32)


@pytest.fixture(scope="module")
def room():
    return parse_room("room", {**SMALL_ROOM, "snr_db": 25}, SR)


def test_room_output_is_aligned_level_matched_and_seeded(room):
    clips = noise_clips()
    out, records, rirs, rooms = simulate(clips, SR, room, keys=[10, 11, 12, 13])
    assert out.shape == clips.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert [best_lag(out[i], clips[i]) for i in range(4)] == [0, 0, 0, 0]
    np.testing.assert_allclose(np.sqrt((out**2).mean(1)), np.sqrt((clips**2).mean(1)), rtol=1e-4)
    assert len(rirs) == len(rooms) == 3 and all(r[0] == 1 for r in rirs)
    assert {r["room"] for r in records} <= {0, 1, 2}
    again, *_ = simulate(clips, SR, room, keys=[10, 11, 12, 13])
    np.testing.assert_array_equal(out, again)


def test_same_row_meets_the_same_room_and_noise_in_any_source(room):
    """The clean and the adversarial version of an example go through the same channel."""
    clean = noise_clips(2)
    adversarial = clean + 0.01
    out_clean, rec_clean, *_ = simulate(clean, SR, room, keys=[7, 3])
    out_adv, rec_adv, *_ = simulate(adversarial[::-1], SR, room, keys=[3, 7])
    assert rec_clean[0]["room"] == rec_adv[1]["room"]
    # the channel is linear up to the level match, so the difference is the channel of the offset
    assert np.corrcoef(out_clean[0], out_adv[1])[0, 1] > 0.99


def test_band_limit_removes_out_of_band_energy(room):
    clips = noise_clips(1, 16000)
    out, *_ = simulate(clips, SR, dataclasses.replace(room, snr_db=120.0), keys=[0])
    spectrum = np.abs(np.fft.rfft(out[0])) ** 2
    freqs = np.fft.rfftfreq(16000, 1 / SR)
    in_band = spectrum[(freqs > 500) & (freqs < 5000)].mean()
    assert spectrum[freqs < 60].mean() < 1e-3 * in_band
    # order-4 Butterworth edge at 6 kHz: about -10 dB at 7.8 kHz
    assert spectrum[freqs > 7800].mean() < 0.3 * in_band


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            {"distance_m": [0.5, 9.0]},
            r"room setting 'r': distance_m up to 9 m does not fit the smallest room",
        ),
        ({"band_hz": [200, 9000]}, r"band_hz must satisfy 1 <= low <= high <= 8000"),
        ({"absorption": [0.7, 0.2]}, r"absorption must satisfy"),
        ({"rt60": 0.5}, r"unknown keys \['rt60'\]"),
        ({"room_dim_m": [[1, 1, 1], [2, 2, 2]]}, r"room_dim_m needs 1.5 m"),
    ],
)
def test_bad_room_settings_are_named(spec, match):
    with pytest.raises(CodecSettingError, match=match):
        parse_room("r", spec, SR)


def test_torch_channel_equals_numpy_channel(room):
    rirs, _ = make_rooms(room, SR)
    clips = noise_clips(2).astype(np.float64)
    n_fft = fft_size(clips.shape[1] + max(map(len, rirs)) + 2048)
    band = band_response(n_fft, SR, room.band_hz)
    noise = np.random.default_rng(1).standard_normal(clips.shape)
    expected = np.stack([apply_channel(clips[i], rirs[i], noise[i], 20.0, band, n_fft) for i in range(2)])
    bank = torch.zeros(2, max(map(len, rirs)), dtype=torch.float64)
    for i in range(2):
        bank[i, : len(rirs[i])] = torch.from_numpy(rirs[i].astype(np.float64))
    got = apply_channel_torch(
        torch.from_numpy(clips), bank, torch.from_numpy(noise), torch.full((2,), 20.0, dtype=torch.float64),
        torch.from_numpy(band), n_fft,
    )  # fmt: skip
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_random_transform_shapes_gradients_and_seeding():
    x = torch.from_numpy(noise_clips(6)).requires_grad_(True)
    transform = build_random_transform(SR, rooms={"room": SMALL_ROOM}, seed=3)
    y = transform(x)
    assert y.shape == x.shape
    y.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    transform.reseed(3)
    first = transform(x.detach())
    transform.reseed(3)
    torch.testing.assert_close(transform(x.detach()), first)
    assert not torch.equal(transform(x.detach()), first)  # fresh draws on the next call
    assert random_transform(x.detach()).shape == x.shape


def test_eot_rooms_are_held_out_from_evaluation_rooms():
    transform = build_random_transform(SR, codec_proxy=False, rooms={"room": SMALL_ROOM})
    eval_rirs, _ = make_rooms(parse_room("room", SMALL_ROOM, SR), SR)
    bank = transform.members["room:room"].rirs
    for k in range(len(bank)):
        for rir in eval_rirs:
            n = min(len(rir), bank.shape[1])
            assert not torch.allclose(bank[k, :n], torch.from_numpy(rir[:n]))


def test_codec_proxy_is_differentiable_codec_like_and_float64_checkable():
    x = torch.from_numpy(noise_clips(4, 4000)).double().requires_grad_(True)
    proxy = CodecProxy(SR, seed=0).double()
    y = proxy(x)
    snr = 10 * torch.log10(x.pow(2).sum(1) / (y - x).pow(2).sum(1))
    assert ((snr > 3) & (snr < 45)).all(), snr  # real codecs at 12-128 kbps: about 13-30 dB
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().mean() > 0.1


def test_straight_through_passes_the_gradient_unchanged():
    x = torch.randn(2, 100, requires_grad=True)
    y = straight_through(x, torch.zeros(2, 100))
    assert torch.equal(y, torch.zeros(2, 100))
    (y * torch.arange(100.0)).sum().backward()
    torch.testing.assert_close(x.grad, torch.arange(100.0).expand(2, 100))


def test_real_codec_forward_is_the_codec_round_trip():
    clips = noise_clips(2, 4000)
    setting = parse_setting("mp3_64k", {"codec": "mp3", "bitrate_kbps": 64}, SR)
    layer = RealCodec([setting], SR)
    x = torch.from_numpy(clips).requires_grad_(True)
    y = layer(x)
    expected = layer.engine.roundtrip(clips, SR, setting).decoded
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_random_transform_rejects_bad_arguments():
    with pytest.raises(ValueError, match="p_identity must be in"):
        RandomTransform({"proxy": CodecProxy(SR)}, p_identity=1.5)
    with pytest.raises(ValueError, match="expected a waveform batch"):
        RandomTransform({"proxy": CodecProxy(SR)})(torch.zeros(3))
    with pytest.raises(ValueError, match="cutoff_hz"):
        CodecProxy(SR, cutoff_hz=(100.0, 9000.0))
    assert RoomChannel(parse_room("r", SMALL_ROOM, SR), SR)(torch.zeros(1, 2000)).abs().max() == 0
