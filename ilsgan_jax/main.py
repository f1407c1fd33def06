r"""Entry point: `python -m ilsgan_jax.main --mode=train --config=configs/ilsgan.py:runlocal
--workdir=DIR [--config.train.batch_size=64 ...]`.

Modes: train, export, train_segmenter, segment, evaluate, fid (fid50k_full + KID of the EMA
generator -> fid.json), mine (MINE region diagnostic -> mine_report.json), demo (train -> export ->
train_segmenter -> score; what `make demo` runs), train_encoder (PerturbGAN: train and score the
inversion encoder, configs/perturbgan.py), layer_figure (--runs='ILS on=W1,ILS off=W2': the
runs' composite / foreground / background / mask rows on the same latents -> one PNG at --output,
default WORKDIR/layer_figure.png), ils_gradients (--runs as for layer_figure: how much of each run's
generator gradient the ILS term carries -> JSON at --output, default WORKDIR/ils_gradients.json).
All logic lives in importable modules.

The workdir is a local folder or a URL (gs://bucket/run); it is checked for writing first.
"""

from absl import app, flags, logging
from ml_collections import config_flags

MODES = (
    "train", "export", "train_segmenter", "segment", "evaluate", "fid", "mine", "demo",
    "train_encoder", "layer_figure", "ils_gradients",
)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (with :variant args).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and outputs: local or a URL (gs://b/run)."
)
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to run.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process only; else auto)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", None, ["auto", "on", "off"],
    "Multi-process start-up without the three flags above: 'on' = jax.distributed.initialize() "
    "with JAX's cluster auto-detection (Cloud TPU pods, GKE, Slurm, Open MPI); 'auto' (default, "
    "or $ILSGAN_DISTRIBUTED) = only for a Slurm or Open MPI launch of several processes.",
)
_INPUT = flags.DEFINE_string("input", None, "segment: folder of images to segment.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "segment: folder for masks and previews; layer_figure: the PNG's path; "
    "ils_gradients: the JSON's path."
)
_RUNS = flags.DEFINE_list(
    "runs", [], "layer_figure, ils_gradients: label=workdir pairs, comma-separated, "
    "e.g. 'ILS on=W1,ILS off=W2'."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "segment/export: replace existing outputs; train_encoder: retrain E."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from ilsgan_jax import files, parallel, runtime

    # A workdir this process cannot write (no credentials, no such bucket, a malformed URL)
    # fails here, naming it, before anything is compiled. URLs stay URLs.
    workdir = files.prepare_workdir(_WORKDIR.value, "--workdir")
    # JAX must see the distributed setup before anything touches devices.
    parallel.initialize_distributed(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, mode=_DISTRIBUTED.value
    )
    runtime.hide_accelerators_from_tensorflow()
    runtime.setup_compilation_cache()
    runtime.quiet_library_logs()
    import jax

    logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
                 jax.devices())
    config = _CONFIG.value
    mode = _MODE.value
    if mode == "train":
        from ilsgan_jax.train.loop import train_and_evaluate

        result = train_and_evaluate(config, workdir)
        logging.info("Trained %d steps (%.1f kimg) in %.0f s", result.steps,
                     result.images_seen / 1000, result.wall_time_seconds)
        return
    from ilsgan_jax.stages import modes

    modes.run_mode(mode, config, workdir, input_dir=_INPUT.value, output_dir=_OUTPUT.value,
                   overwrite=_OVERWRITE.value, runs=_RUNS.value)


if __name__ == "__main__":
    app.run(main)
