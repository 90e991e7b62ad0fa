"""openvino_separator.py: HTDemucs' network in OpenVINO gives torch's stems at fp32 and stems
within bf16's bound at bf16; its export is kept in the cache, reused, and never trusted when
damaged; every case it cannot run falls back to torch with one warning; importing OpenVINO sends
and writes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_media
from demucs.hdemucs import HDemucs
from demucs.states import save_with_checksum
from demucs_fixtures import SOURCES, demucs_package, tiny_htdemucs
from test_stems import API_ATOL, BF16_STEM_ERROR, BF16_UNIT_ROUNDOFF, SR, noise_mix, separate_all

from highlightsense import media, openvino_separator, separator, stems
from highlightsense.engine import Engine
from highlightsense.errors import SettingsError
from highlightsense.settings import AnalysisSettings

needs_openvino = pytest.mark.skipif(
    not openvino_separator.available(),
    reason="OpenVINO is not installed (requirements.txt installs it on x86-64 Linux and Windows)",
)
MIX = noise_mix(2 * SR + 12_345, seed=11)  # four windows, the last one partial
# OpenVINO fp32 against torch fp32, max |Δ| over the stem's peak: float32 keeps 24 bits, and
# another summation order in each layer moves the output by a few units of 2^-24 (measured
# 7.8e-7 of the peak, ≈ 13 units). 2^-17 (128 units) leaves a 10x margin, and still catches the
# weights rounded to fp16 on the way (OpenVINO's save_model does that unless told: 1.5-3.3e-5).
FP32_RELATIVE = 2.0**-17


@pytest.fixture(scope="module")
def tiny(tiny_separator: tuple[Path, str]) -> separator.Separator:
    repo, name = tiny_separator
    return separator.load_separator(name, repo)


@pytest.fixture(scope="module")
def exact(tiny: separator.Separator) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's fp32 stems of MIX: what Demucs itself gives (tests/test_stems.py)."""
    return separate_all(tiny, MIX, 30_000)


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder, and no network built or warning given in this process yet; the
    folder OpenVINO's entries go to."""
    monkeypatch.setenv("HIGHLIGHTSENSE_CACHE", str(tmp_path / "cache"))
    openvino_separator._built.cache_clear()
    openvino_separator._warn_once.cache_clear()
    yield tmp_path / "cache" / "openvino"
    openvino_separator._built.cache_clear()  # the next test builds against its own cache
    openvino_separator._warn_once.cache_clear()


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per export made (the ONNX export: the expensive, cold step)."""
    made: list[int] = []
    original = openvino_separator.export

    def counted(model: torch.nn.Module, samples: int) -> bytes:
        made.append(samples)
        return original(model, samples)

    monkeypatch.setattr(openvino_separator, "export", counted)
    return made


def rms(t: torch.Tensor) -> float:
    return t.square().mean().sqrt().item()


def entries(folder: Path) -> dict[str, tuple[int, int]]:
    """Each entry's (inode, mtime in ns): an entry written again gets a new inode (atomic
    rename), one read back keeps its inode (reading touches only its mtime)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


# --- the cut -------------------------------------------------------------------------------


def test_the_cut_in_torch_equals_the_model() -> None:
    """Network between torch's STFT and iSTFT is HTDemucs.forward, bit for bit."""
    model = tiny_htdemucs()
    mix = noise_mix(int(SR * model.segment), seed=2)[None]
    with torch.no_grad():
        whole = model(mix)
        cut = openvino_separator.split_forward(model, openvino_separator.Network(model), mix)
    assert torch.equal(cut, whole)


# --- the stems -----------------------------------------------------------------------------


@needs_openvino
def test_fp32_stems_equal_torchs(tiny, exact, fresh) -> None:
    # two workers, so two infer requests run at once
    voice, game = separate_all(tiny, MIX, 30_000, precision="fp32", runtime="openvino",
                               workers=2, batch_size=2)  # fmt: skip
    for ours, reference in zip((voice, game), exact, strict=True):
        assert ours.shape == reference.shape and ours.dtype == torch.float32
        torch.testing.assert_close(ours, reference, rtol=0, atol=API_ATOL)
        assert reference.abs().max() > 100 * API_ATOL  # the stems are not trivially zero
        assert (ours - reference).abs().max() < FP32_RELATIVE * reference.abs().max()


@needs_openvino
def test_bf16_stems_stay_within_bf16s_bound(tiny, exact, fresh) -> None:
    bf16 = separate_all(tiny, MIX, 30_000, precision="bf16", runtime="openvino")
    (network,) = openvino_separator.networks(tiny, "bf16", 1, torch.get_num_threads())
    ran_bf16 = network.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    for ours, reference in zip(bf16, exact, strict=True):
        error = rms(ours - reference) / rms(reference)
        print(f"OpenVINO bf16 stem error: rms {error / BF16_UNIT_ROUNDOFF:.2f} units of 2^-9")
        assert error < BF16_STEM_ERROR
        assert (ours - reference).abs().max() < 0.05 * reference.abs().max()
        # OpenVINO runs f32 on a CPU without bf16 instructions; where it ran bf16, it shows
        assert error > (0 if ran_bf16 else -1)


@needs_openvino
@pytest.mark.parametrize(
    ("weights", "paired"),
    [
        ([[1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 2.0]], True),  # others alike in each member
        ([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]], False),  # htdemucs_ft-like: not alike
    ],
)
def test_a_bags_stems_equal_torchs_with_the_other_sources_summed_first(
    tmp_path: Path, fresh, weights, paired
) -> None:
    """Where every member weighs the sources other than the voice alike, OpenVINO's networks
    hand back (voice, sum of the others) and the game gets each source's de-normalising mean:
    the stems are torch's at fp32 (same bound as one model); elsewhere all four are kept."""
    for seed, name in ((21, "aaaa0001"), (22, "aaaa0002")):
        save_with_checksum(demucs_package(tiny_htdemucs(seed)), tmp_path / f"{name}.th")
    bag = {"models": ["aaaa0001", "aaaa0002"], "weights": weights}
    (tmp_path / "pair.yaml").write_text(yaml.safe_dump(bag))
    tiny_bag = separator.load_separator("pair", tmp_path)
    # the mix is offset, so a missing or doubled mean in the game shows
    mix = MIX + 0.05
    reference = separate_all(tiny_bag, mix, 30_000)
    stream = stems.separate_stream(
        tiny_bag, [mix], total_samples=mix.shape[-1], mean=0.0, std=1.0, runtime="openvino",
        workers=2, batch_size=2,
    )  # fmt: skip
    assert stream._paired is paired
    ours = separate_all(tiny_bag, mix, 30_000, precision="fp32", runtime="openvino", workers=2,
                        batch_size=2)  # fmt: skip
    for got, want in zip(ours, reference, strict=True):
        assert got.shape == want.shape
        assert (got - want).abs().max() < FP32_RELATIVE * want.abs().max()


# --- the cache -----------------------------------------------------------------------------


@needs_openvino
def test_a_second_load_reuses_the_export_and_the_compiled_network(
    tiny, fresh, exports, monkeypatch
) -> None:
    first = separate_all(tiny, MIX, 30_000, precision="bf16", runtime="openvino")
    assert len(exports) == 1
    kept = entries(fresh)
    assert [name.rsplit(".", 1)[1] for name in kept] == ["compiled", "ir"]

    compiles = []
    compile_ir = openvino_separator._compile_ir
    monkeypatch.setattr(openvino_separator, "_compile_ir",
                        lambda *args: compiles.append(1) or compile_ir(*args))  # fmt: skip
    openvino_separator._built.cache_clear()  # as a new process would
    second = separate_all(tiny, MIX, 30_000, precision="bf16", runtime="openvino")
    assert len(exports) == 1 and not compiles  # the compiled network was imported
    assert {k: v[0] for k, v in entries(fresh).items()} == {k: v[0] for k, v in kept.items()}
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def primed(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the tiny separator's fp32 entries, to copy from."""
    cache = tmp_path_factory.mktemp("primed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HIGHLIGHTSENSE_CACHE", str(cache))
        openvino_separator._built.cache_clear()
        openvino_separator.networks(tiny, "fp32", 1, torch.get_num_threads())
        openvino_separator._built.cache_clear()
    return cache / "openvino"


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def forge(path: Path) -> None:
    """An entry whose checksum matches, holding a graph that is not HTDemucs' network: only
    what OpenVINO makes of it can tell."""
    xml = b'<?xml version="1.0"?><net name="x" version="11"><layers/><edges/></net>'
    openvino_separator._write_entry(path, [np.frombuffer(xml, np.uint8), np.zeros(8, np.uint8)])


def link_elsewhere(path: Path) -> None:
    elsewhere = path.parent.parent / "elsewhere"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)


@needs_openvino
@pytest.mark.parametrize(
    ("damage", "entry", "exported_again"),
    [
        (flip_a_byte, "compiled", False),  # compiled again from the IR
        (link_elsewhere, "compiled", False),
        (lambda path: path.write_bytes(path.read_bytes()[:-100]), "ir", True),  # cut short
        (flip_a_byte, "ir", True),
        (forge, "ir", True),
    ],
    ids=["flipped-compiled", "linked-compiled", "truncated-ir", "flipped-ir", "forged-ir"],
)
def test_a_damaged_entry_is_replaced_not_trusted(
    tiny, exact, primed, fresh, exports, damage, entry, exported_again
) -> None:
    shutil.copytree(primed, fresh)
    (damaged,) = fresh.glob(f"*.{entry}")
    if entry == "ir":  # else the compiled network alone would do, unchecked against the IR
        next(fresh.glob("*.compiled")).unlink()
    damage(damaged)
    voice, game = separate_all(tiny, MIX, 30_000, precision="fp32", runtime="openvino")
    assert len(exports) == exported_again
    assert damaged.is_file() and not damaged.is_symlink()
    assert openvino_separator._read_entry(damaged, 2 if entry == "ir" else 1) is not None
    torch.testing.assert_close(voice, exact[0], rtol=0, atol=API_ATOL)
    torch.testing.assert_close(game, exact[1], rtol=0, atol=API_ATOL)


@needs_openvino
def test_a_cache_that_cannot_be_written_only_warns_once(tiny, fresh) -> None:
    fresh.parent.mkdir(parents=True)
    fresh.write_text("a file where the folder would be")
    with pytest.warns(UserWarning, match="could not be written") as caught:
        separate_all(tiny, MIX[:, :30_000], 30_000, precision="fp32", runtime="openvino")
    assert len(caught) == 1  # the IR and the compiled network both failed to be written


# --- choosing, and falling back ------------------------------------------------------------


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> separator.Separator:
    """An HDemucs separator: not HTDemucs, so OpenVINO cannot run it."""
    folder = tmp_path_factory.mktemp("hdemucs")
    with torch.random.fork_rng():
        torch.manual_seed(7)
        model = HDemucs(sources=SOURCES, channels=4, dconv_comp=2, segment=2)
    save_with_checksum(demucs_package(model.eval()), folder / "hdemucs1.th")
    (folder / "hybrid.yaml").write_text(yaml.safe_dump({"models": ["hdemucs1"]}))
    return separator.load_separator("hybrid", folder)


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("gpu", "CPUs only"),
        ("hdemucs", "HTDemucs models only"),
        ("not installed", "not installed"),
    ],
)
def test_what_openvino_cannot_run_goes_to_torch(tiny, hybrid, fresh, monkeypatch, case, why):
    """Asked for, it warns once and says why; under auto it is torch without a word."""
    model, device = (hybrid, "cpu") if case == "hdemucs" else (tiny, "cpu")
    if case == "gpu":
        device = "cuda:0"
    if case == "not installed":
        monkeypatch.setattr(openvino_separator, "available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for requested in ("auto", "openvino", "openvino"):
            assert openvino_separator.choose(requested, model, device, "bf16", 2, 1) == "torch"
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert why in str(caught[0].message) and str(caught[0].message).endswith("torch separates it.")


def test_auto_leaves_fp32_and_the_tracks_to_torch(tiny, fresh) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert openvino_separator.choose("auto", tiny, "cpu", "fp32", 2, 1) == "torch"
        assert openvino_separator.choose("openvino", None, "cpu", "bf16", 2, 1) == "torch"
        assert openvino_separator.choose("torch", tiny, "cpu", "bf16", 2, 1) == "torch"
    assert openvino_separator._built.cache_info().currsize == 0  # nothing was built


@needs_openvino
def test_auto_picks_openvino_at_bf16_and_the_stems_key_says_so(tiny_separator, fresh) -> None:
    repo, name = tiny_separator
    settings = {"separator": name, "separator_repo": str(repo), "device": "cpu"}
    producers = {
        runtime: Engine.create(
            AnalysisSettings(**settings, precision="bf16", separator_runtime=runtime)
        ).producer
        for runtime in ("auto", "torch", "openvino")
    }
    assert producers["auto"] == producers["openvino"] != producers["torch"]
    assert producers["auto"].endswith("+bf16+openvino")
    assert producers["torch"].endswith("+bf16")


@needs_openvino
def test_a_failing_export_warns_once_and_gives_torchs_stems(
    tiny_separator, fresh, tmp_path, monkeypatch
) -> None:
    def broken(model: torch.nn.Module, samples: int) -> bytes:
        raise RuntimeError("the exporter broke\nsecond line")

    monkeypatch.setattr(openvino_separator, "export", broken)
    repo, name = tiny_separator
    settings = {"separator": name, "separator_repo": str(repo), "device": "cpu"}
    info = media.probe(make_media(tmp_path / "mix.m4a", 4, video=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engines = [
            Engine.create(AnalysisSettings(**settings, precision="bf16", separator_runtime=r))
            for r in ("openvino", "auto", "torch")
        ]
        assert [engine.runtime for engine in engines] == ["torch"] * 3
        features = [engine.features(info) for engine in engines]
    messages = [str(w.message) for w in caught]
    assert messages == [
        "OpenVINO could not export or compile the separator (RuntimeError: the exporter "
        "broke); torch separates it."
    ]
    assert np.array_equal(features[0], features[2]) and np.array_equal(features[1], features[2])
    assert engines[0].producer == engines[2].producer  # the same stems, the same cache entry


def test_bad_runtimes_are_refused(tiny, hybrid) -> None:
    with pytest.raises(SettingsError, match="auto, torch or openvino"):
        AnalysisSettings(separator_runtime="tensorrt")
    kwargs = {"total_samples": 10, "mean": 0.0, "std": 1.0}
    with pytest.raises(SettingsError, match="runtime must be one of torch, openvino"):
        stems.separate_stream(tiny, [], runtime="onnx", **kwargs)
    with pytest.raises(SettingsError, match="HTDemucs models only"):
        stems.separate_stream(hybrid, [], runtime="openvino", **kwargs)


# --- telemetry -----------------------------------------------------------------------------


@needs_openvino
def test_importing_openvino_sends_and_writes_nothing(tmp_path: Path) -> None:
    """OpenVINO's package sends a usage event and writes a client id under the home folder when
    imported (openvino-telemetry, opt-out by default); ours blocks it."""
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys\n"
        "from highlightsense import openvino_separator\n"
        "openvino_separator.import_openvino().Core()\n"
        "print(sys.modules['openvino.tools.ovc.telemetry_utils'].tm.__name__)\n"
    )
    env = {**os.environ, "HOME": str(home), "USERPROFILE": str(home)}
    env.pop("CI", None)  # openvino-telemetry is silent in CI: show it would not be here either
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env, cwd=Path(__file__).parents[1])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "openvino.tools.ovc.telemetry_stub"
    assert list(home.iterdir()) == []


def test_pruning_removes_only_our_oldest_entries(tmp_path: Path, monkeypatch) -> None:
    """Beyond the limit the least recently used entries go, but never the one just written,
    and never a file that is not one of ours (a user's model that happens to end in .ir)."""
    folder = tmp_path / "openvino"
    folder.mkdir()
    users = folder / "my model.ir"
    users.write_bytes(bytes(5000))
    os.utime(users, (1, 1))  # the oldest of all
    part = np.zeros(1000, dtype=np.uint8)
    monkeypatch.setattr(openvino_separator, "MAX_BYTES", 2500)  # two entries of ≈ 1.1 kB fit
    written = []
    for i in range(4):
        path = folder / f"entry{i}{openvino_separator.IR_SUFFIX}"
        openvino_separator._write_entry(path, [part])
        os.utime(path, (10 + i, 10 + i))
        written.append(path)
    openvino_separator._prune(folder, written[-1])
    assert [path.exists() for path in written] == [False, False, True, True]
    assert users.read_bytes() == bytes(5000)
