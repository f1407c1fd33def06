r"""Images/s of our train step and of the official ILSGAN PyTorch code, in turns in one process.

The official code (github.com/qrzou/ILSGAN) is imported from a checkout given by path; nothing of
it lives in this repository. Without torch or the checkout the script says so and exits 0.

  ILSGAN_REFERENCE_DIR=/path/to/ILSGAN python launch/benchmark_reference.py \
      --configs=runlocal:32:32,paper:64:8:2 --rounds=3 --output=/tmp/benchmark_reference.json

`--configs` lists `widths:resolution:batch[:steps]` (widths as in launch/benchmark.py). For each,
ours is the train step of launch/benchmark.py (`benchmark_step.setup_train_step` and
`compile_phased_step`: G main, D main and EMA in one compiled phase, R1 in another). Theirs is the
official `PerturbGenerator` and `DiscriminatorOpen` at the same widths (channel_base,
channel_max, z/w, mapping layers, minibatch-std group 4, conv_clamp 256) with its `ILSLoss` set as
train_ILS_64.py's ILSGAN default ('ILS_predL': CLUB with the fixed Laplace conditional on the
separated regions, the perturbation, the mask losses, no style mixing), run phase by phase as
training_loop_ILS.py runs them: Gmain, Greg every 4 steps (a no-op without path-length
regularisation, as in the official code), Dmain, Dreg (R1) every 16 steps, each with its
gradient sanitising and the lazy-regularisation Adam, then the G EMA update.

Like for like: float32 on both sides (the official fp16 layers, num_fp16_res=4, are a CUDA
feature, so num_fp16_res=0); ADA off on both (ours: ada.mode='noaug'; the paper widths' ADA
stays out of the ratio); both on the CPU, torch with as many threads as XLA's CPU pool
(`--torch_threads`, default: the CPUs this process may run on). The official custom ops
(bias_act, upfirdn2d) run their reference implementations on the CPU, as they do for any CPU user.

Timing: a warm-up step and R1 on each side, then `--rounds` rounds; in each round both sides run
in turn (the first alternates between rounds): `steps` main steps timed together, then one R1
phase timed alone. Seconds per step = main + R1 / 16 (R1 amortised, as in both training loops),
images/s = batch / that, ratio = ours / theirs within the round. The table shows the medians
over rounds and the range of the per-round ratios; the JSON has every round. Ours compiles (the
compile seconds: lowering + XLA compilation of both phases); the official code runs eagerly.

On a CPU shared with other jobs the official step slows down far more with 2 torch threads than
with 1 (each of its thousands of small ops waits for both OpenMP threads), so there also measure
`--torch_threads=1` (docs/performance.md).
"""

import contextlib
import copy
import importlib.util
import io
import json
import os
import statistics
import sys
import time
import types

import jax
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_step  # noqa: E402  (launch/benchmark_step.py)

_REFERENCE_DIR = flags.DEFINE_string(
    "reference_dir",
    os.environ.get("ILSGAN_REFERENCE_DIR", ""),
    "Checkout of github.com/qrzou/ILSGAN (default: $ILSGAN_REFERENCE_DIR).",
)
_CONFIGS = flags.DEFINE_list(
    "configs",
    ["runlocal:32:32:16", "paper:64:8:2"],
    "widths:resolution:batch[:steps] to measure; steps = main steps per round (default 16).",
)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds of turns per configuration.")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "torch intra-op threads; 0 = the CPUs this process may run on."
)
_OUTPUT = flags.DEFINE_string("output", None, "Path of the JSON file of the results.")

# The ILSGAN default of the official train_ILS_64.py ('ILS_predL'), by our estimator name.
_DISTRIBUTIONS = {"laplace": "predetermined_laplace", "gaussian": "predetermined_gaussian"}


def missing_requirements(reference_dir: str) -> str | None:
    """Why the comparison cannot run (no torch, no checkout), or None."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    if not os.path.isfile(os.path.join(reference_dir, "training", "loss.py")):
        return (
            f"no checkout of github.com/qrzou/ILSGAN at {reference_dir!r} "
            "(--reference_dir or $ILSGAN_REFERENCE_DIR)"
        )
    return None


def parse_config(spec: str) -> dict:
    """`widths:resolution:batch[:steps]` -> {'widths', 'resolution', 'batch_size', 'steps'}."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or parts[0] not in benchmark_step.WIDTHS:
        raise ValueError(
            f"--configs entries are widths:resolution:batch[:steps] with widths in "
            f"{benchmark_step.WIDTHS}, got {spec!r}"
        )
    steps = int(parts[3]) if len(parts) == 4 else 16
    return dict(widths=parts[0], resolution=int(parts[1]), batch_size=int(parts[2]), steps=steps)


def import_reference(reference_dir: str) -> types.SimpleNamespace:
    """The official `training.networks`, `training.loss` and `torch_utils.misc` modules."""
    if importlib.util.find_spec("torchvision") is None:  # imported by loss.py, unused here
        sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    sys.path.insert(0, reference_dir)
    try:
        from torch_utils import misc
        from training import loss, networks
    finally:
        sys.path.remove(reference_dir)
    return types.SimpleNamespace(misc=misc, loss=loss, networks=networks)


class ReferenceTrainStep:
    """The official networks, loss and optimisers at our config's widths; `main()` runs one
    iteration's Gmain, Greg (every `g_reg_interval`), Dmain and the G EMA update, `r1()` the
    Dreg phase, each as training_loop_ILS.py does."""

    def __init__(self, reference: types.SimpleNamespace, config, settings, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        model, loss = config.model, config.loss
        if loss.ils.estimator not in _DISTRIBUTIONS:
            raise ValueError(f"only {tuple(_DISTRIBUTIONS)} estimators, got {loss.ils.estimator}")
        resolution = config.data.resolution
        self.batch_size = config.train.batch_size
        common = dict(
            channel_base=model.channel_base,
            channel_max=model.channel_max,
            num_fp16_res=0,
            conv_clamp=model.conv_clamp,
        )
        self.G = reference.networks.PerturbGenerator(
            z_dim=model.z_dim,
            c_dim=0,
            w_dim=model.w_dim,
            img_resolution=resolution,
            img_channels=3,
            mapping_kwargs=dict(num_layers=model.mapping_layers),
            layer_t_kwargs=dict(bg_contrast=loss.bg_contrast, xint_max=loss.xint_max),
            synthesis_kwargs=common,
        )
        self.D = reference.networks.DiscriminatorOpen(
            c_dim=0,
            img_resolution=resolution,
            img_channels=3,
            epilogue_kwargs=dict(mbstd_group_size=model.mbstd_group_size),
            **common,
        )
        self.G.train().requires_grad_(False)
        self.D.train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()
        form = dict(
            mode="anti_leakage",
            estimator="club",
            distribution=_DISTRIBUTIONS[loss.ils.estimator],
            scale="do_mean",
            neg_weight=loss.ils.neg_weight,
            mf_conditioned_b=dict(do_mf=False),
            separate_mi=dict(do_separate=True, stop_grad=False, opt_mask=True),
        )
        strategy = dict(
            strategy=loss.ils.strategy,
            initial_anti=True,
            initial_anti_sigma=loss.ils.initial_sigma,
            ILS_sigma=loss.ils.sigma,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # the constructor prints its settings
            self.loss = reference.loss.ILSLoss(
                device=torch.device("cpu"),
                G_mapping_bg=self.G.mapping_bg,
                G_synthesis_bg=self.G.synthesis_bg,
                G_mapping_fg=self.G.mapping_fg,
                G_synthesis_fg=self.G.synthesis_fg,
                Tx=self.G.Tx,
                D=self.D,
                anti_zero_mask="msize",  # what training_loop_ILS.py sets for c_dim 0
                r1_gamma=settings.r1_gamma,
                style_mixing_prob=loss.style_mixing_prob,
                min_msize=loss.min_msize,
                msize_weight=loss.msize_weight,
                bin_weight=loss.bin_weight,
                do_perturb=True,
                do_anti_leaking=bool(loss.ils.enabled),
                ILS_weight_strategy=strategy,
                ILS_form_config=form,
            )
        self.misc = reference.misc
        self.g_reg_interval = int(loss.g_reg_interval)
        self.r1_interval = settings.r1_interval
        self.ema_kimg, self.ema_rampup = settings.ema_kimg, settings.ema_rampup
        self.optimizers = {}
        for name, module, interval in (
            ("G", self.G, self.g_reg_interval),
            ("D", self.D, self.r1_interval),
        ):
            ratio = interval / (interval + 1)  # lazy regularisation
            self.optimizers[name] = torch.optim.Adam(
                module.parameters(),
                lr=config.optim.learning_rate * ratio,
                betas=(config.optim.beta1**ratio, config.optim.beta2**ratio),
                eps=config.optim.eps,
            )
        rng = np.random.default_rng(seed)
        self.real_uint8 = torch.from_numpy(
            rng.integers(0, 256, (self.batch_size, 3, resolution, resolution), dtype=np.uint8)
        )
        self.labels = torch.zeros([self.batch_size, 0])
        self.batch_idx = 0
        self.cur_nimg = 0

    def _inputs(self):
        """The loop's per-iteration tensors: real images in [-1, 1], then z and eps per phase."""
        import torch

        real = self.real_uint8.to(torch.float32) / 127.5 - 1
        z = torch.randn([4 * self.batch_size, self.G.z_dim]).split(self.batch_size)
        eps = (2 * torch.rand([4 * self.batch_size, self.G.eps_dim]) - 1).split(self.batch_size)
        return real, z, eps

    def _phase(self, name: str, module, gain: int, real, z, eps) -> None:
        optimizer = self.optimizers[name[0]]
        optimizer.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        self.loss.accumulate_gradients(
            phase=name,
            real_img=real,
            real_c=self.labels,
            gen_z=z,
            gen_c=self.labels,
            trs_eps=eps,
            sync=True,
            gain=gain,
            cur_kimg=self.cur_nimg // 1000,
            do_anti_leaking=False,  # what the loop passes (the loss reads its own setting)
        )
        module.requires_grad_(False)
        for param in module.parameters():
            if param.grad is not None:
                self.misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
        optimizer.step()

    def main(self) -> None:
        real, z, eps = self._inputs()
        self._phase("Gmain", self.G, 1, real, z[0], eps[0])
        if self.batch_idx % self.g_reg_interval == 0:
            self._phase("Greg", self.G, self.g_reg_interval, real, z[1], eps[1])
        self._phase("Dmain", self.D, 1, real, z[2], eps[2])
        ema_nimg = self.ema_kimg * 1000
        if self.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.cur_nimg * self.ema_rampup)
        beta = 0.5 ** (self.batch_size / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)
        self.cur_nimg += self.batch_size
        self.batch_idx += 1
        self.loss.cur_nimg = self.cur_nimg

    def r1(self) -> None:
        real, z, eps = self._inputs()
        self._phase("Dreg", self.D, self.r1_interval, real, z[3], eps[3])


class OurTrainStep:
    """Our compiled phases with the state between calls; `main()` and `r1()` block until done."""

    def __init__(self, widths: str, resolution: int, batch_size: int):
        config, mesh, trainer, init, real = benchmark_step.setup_train_step(
            widths, resolution, batch_size, "float32", ada_mode="noaug"
        )
        self.config, self.settings, self.real = config, trainer.settings, real
        self.state = init(jax.random.key(config.seed))
        self.phased, self.compile_seconds, _ = benchmark_step.compile_phased_step(
            trainer, mesh, self.state, real
        )

    def main(self) -> None:
        self.state, metrics = self.phased.main(self.state, self.real)
        jax.block_until_ready(metrics)

    def r1(self) -> None:
        self.state, metrics = self.phased.r1(self.state, self.real)
        jax.block_until_ready(metrics)


def _time_round(step, steps: int, r1_interval: int) -> float:
    """Seconds per train step: `steps` main steps, then one R1 amortised over its interval."""
    start = time.perf_counter()
    for _ in range(steps):
        step.main()
    main_seconds = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    step.r1()
    return main_seconds + (time.perf_counter() - start) / r1_interval


def compare(reference, widths: str, resolution: int, batch_size: int, steps: int, rounds: int):
    """One configuration: both sides built, warmed up and timed in turns; one row."""
    load_before = os.getloadavg()[0]
    ours = OurTrainStep(widths, resolution, batch_size)
    theirs = ReferenceTrainStep(reference, ours.config, ours.settings, seed=ours.config.seed)
    sides = {"ours": ours, "official": theirs}
    for side in sides.values():  # warm-up: the first main step and R1 of each
        side.main()
        side.r1()
    seconds = {name: [] for name in sides}
    for round_index in range(rounds):
        order = list(sides) if round_index % 2 == 0 else list(sides)[::-1]
        for name in order:
            seconds[name].append(_time_round(sides[name], steps, ours.settings.r1_interval))
        logging.info(
            "%s %d px round %d: ours %.3f s/step, official %.3f s/step",
            widths, resolution, round_index, seconds["ours"][-1], seconds["official"][-1],
        )  # fmt: skip
    ratios = [t / o for o, t in zip(seconds["ours"], seconds["official"], strict=True)]
    row = {
        "widths": widths,
        "resolution": resolution,
        "batch_size": batch_size,
        "ada": "noaug",
        "compute_dtype": "float32",
        "main_steps_per_round": steps,
        "rounds": rounds,
        "ours_compile_seconds": round(ours.compile_seconds, 1),
        "ours_seconds_per_step": [round(s, 4) for s in seconds["ours"]],
        "official_seconds_per_step": [round(s, 4) for s in seconds["official"]],
        "ours_images_per_second": round(batch_size / statistics.median(seconds["ours"]), 2),
        "official_images_per_second": round(batch_size / statistics.median(seconds["official"]), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)],
        "load_average_1min": round((load_before + os.getloadavg()[0]) / 2, 2),
    }
    del ours, theirs, sides
    return row


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'widths':>9} {'res':>4} {'batch':>5} {'ours img/s':>10} {'official':>9} "
        f"{'ours/official':>13} {'range':>12} {'compile s':>9} {'load':>5}"
    ]
    for r in rows:
        lo, hi = r["ratio_min_max"]
        lines.append(
            f"{r['widths']:>9} {r['resolution']:>4} {r['batch_size']:>5} "
            f"{r['ours_images_per_second']:>10} {r['official_images_per_second']:>9} "
            f"{'x' + str(r['ratio']):>13} {f'{lo}-{hi}':>12} {r['ours_compile_seconds']:>9} "
            f"{r['load_average_1min']:>5}"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    reason = missing_requirements(_REFERENCE_DIR.value)
    if reason:
        print(f"benchmark_reference: skipped, {reason}.")
        return
    configs = [parse_config(spec) for spec in _CONFIGS.value]
    jax.config.update("jax_platforms", "cpu")  # both sides on the CPU
    import torch

    threads = _TORCH_THREADS.value or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    reference = import_reference(os.path.abspath(_REFERENCE_DIR.value))
    rows = []
    for c in configs:
        row = compare(reference, c["widths"], c["resolution"], c["batch_size"], c["steps"],
                      _ROUNDS.value)  # fmt: skip
        logging.info("%s", row)
        rows.append(row)
    result = {
        "backend": jax.default_backend(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "jax": jax.__version__,
        "rows": rows,
    }
    print(format_table(rows))
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
