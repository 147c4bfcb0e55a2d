import pytest
import torch

from advmir.models.architectures import build_arch
from advmir.models.frontends import FRONTENDS, build_frontend, cqt_kernels
from advmir.models.zoo import build_model

SR = 16000


@pytest.mark.parametrize("name", FRONTENDS)
def test_shapes_and_gradient_reach_the_waveform(name, sines):
    fe = build_frontend(name, SR).eval()
    x = torch.from_numpy(sines).requires_grad_(True)
    y = fe(x)
    if name == "waveform":
        assert y.shape == (4, 1, 4000)
    else:
        assert y.dim() == 4 and y.shape[:2] == (4, 1) and y.shape[3] == 4000 // 256 + 1
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", FRONTENDS)
def test_batch_equals_single(name, sines):
    fe = build_frontend(name, SR).eval()
    x = torch.from_numpy(sines)
    batch = fe(x)
    single = torch.cat([fe(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["stft", "logmel", "cqt", "filterbank"])
def test_gradcheck_float64(name):
    kwargs = {
        "cqt": {"fmin": 500.0, "n_bins": 12, "n_fft": 1024, "hop_length": 128},
        "filterbank": {"n_filters": 6, "kernel_size": 33, "hop_length": 32, "pool": 4},
    }.get(name, {})
    if name == "stft":
        kwargs = {"n_fft": 64, "hop_length": 32}
    if name == "logmel":
        kwargs = {"n_fft": 128, "hop_length": 64, "n_mels": 8}
    fe = build_frontend(name, SR, **kwargs).double().eval()
    x = (torch.rand(1, 256, dtype=torch.float64) - 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: fe(a).sum(), (x,), eps=1e-6, atol=1e-4)


def test_cqt_peaks_at_the_right_bin():
    fe = build_frontend("cqt", SR).eval()
    t = torch.arange(16000) / SR
    freq = 440.0  # A4 (MIDI 69): 41 semitones above the lowest bin, E1 (MIDI 28, 41.2 Hz)
    spec = fe.spectrum(torch.sin(2 * torch.pi * freq * t).unsqueeze(0))
    assert int(spec[0, :, 20:40].mean(-1).argmax()) == 41


def test_cqt_rejects_bins_above_nyquist():
    with pytest.raises(ValueError, match="Nyquist"):
        cqt_kernels(SR, 1000.0, 84, 12, 8192)


@pytest.mark.parametrize(("frontend", "arch"), [("logmel", "cnn2d"), ("stft", "crnn"), ("waveform", "cnn1d")])
def test_models_map_waveforms_to_logits(frontend, arch, sines):
    model = build_model({"frontend": frontend, "arch": arch, "arch_args": {"width": 8}}, 5, SR).eval()
    assert model(torch.from_numpy(sines)).shape == (4, 5)


def test_mismatched_frontend_and_arch_is_refused():
    with pytest.raises(ValueError, match="pair 'waveform' with 'cnn1d'"):
        build_model({"frontend": "waveform", "arch": "cnn2d"}, 3, SR)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_arch("transformer", 3)


def test_log_floor_hides_what_lies_far_below_the_loudest_bin():
    from advmir.models.frontends import LogMel

    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    tone = (0.5 * torch.sin(2 * torch.pi * 440 * t)).unsqueeze(0)
    hiss = 1e-5 * torch.randn(1, 16000)  # ~90 dB below the tone
    floored, raw = LogMel(16000).eval(), LogMel(16000, top_db=None).eval()  # default floor: 40 dB
    change = lambda fe: (fe(tone + hiss) - fe(tone)).abs().max().item()  # noqa: E731
    assert change(floored) < 1e-3 < change(raw)
    with pytest.raises(ValueError, match="top_db"):
        LogMel(16000, top_db=0)


def test_filterbank_starts_as_a_mel_filterbank():
    from advmir.models.frontends import gabor_filterbank

    fe = build_frontend("filterbank", SR).eval()
    t = torch.arange(16000) / SR
    response = []
    for freq in (100.0, 440.0, 1000.0, 4000.0):
        spec = fe.spectrum(torch.sin(2 * torch.pi * freq * t).unsqueeze(0))[0, :, 10:50].mean(-1)
        response.append(int(spec.argmax()))
    assert response == sorted(response) and len(set(response)) == 4  # low to high, one filter each
    # unit gain at the centre for a complex exponential: a real sine of amplitude 1 is two of
    # amplitude 1/2, and the analytic filter passes one of them, so the power is about 1/4
    w = gabor_filterbank(SR, 64, 401)
    assert w.shape == (128, 1, 401)
    with torch.no_grad():
        peak = fe.spectrum(torch.sin(2 * torch.pi * 1000.0 * t).unsqueeze(0))[0, :, 10:50].mean(-1).max()
    assert 0.2 < float(peak) <= 0.26


def test_filterbank_is_trained_with_the_classifier():
    model = build_model({"frontend": "filterbank", "arch": "cnn2d", "arch_args": {"width": 8}}, 3, SR)
    assert "frontend.weight" in dict(model.named_parameters())
    model(torch.randn(2, 4000) * 0.1).sum().backward()
    assert model.frontend.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["logmel", "filterbank"])
def test_log_floor_keeps_a_gradient_in_quiet_frames(name):
    """An additive floor, unlike a clamp, leaves attacks a gradient where the clip is near silent."""
    t = torch.arange(16000) / SR
    tone = 0.5 * torch.sin(2 * torch.pi * 440 * t) * (t < 0.5)
    x = (tone + 1e-6 * torch.randn(16000)).unsqueeze(0).requires_grad_(True)
    fe = build_frontend(name, SR).eval()
    fe(x).sum().backward()
    assert x.grad[0, 12000:].abs().sum() > 0


def test_first_pool_sets_the_first_block():
    net = build_arch("cnn2d", 3, width=8, first_pool=[4, 2])
    pools = [m for m in net.features[0] if isinstance(m, torch.nn.MaxPool2d)]
    assert [p.kernel_size for p in pools] == [(4, 2)]
    assert net(torch.randn(2, 1, 257, 63)).shape == (2, 3)
