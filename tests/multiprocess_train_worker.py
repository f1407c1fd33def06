"""`python -m ilsgan_jax.main` as is, plus one observation (for tests/test_multiprocess_train.py).

Usage: python tests/multiprocess_train_worker.py OUT_NPZ DATA_SHARES [ilsgan_jax.main flags...]

Runs the real entry point (`runpy` of `ilsgan_jax.main` with the remaining flags) and, when
training returns, writes this process's own copy of the final train state to OUT_NPZ: every
leaf of the replicated `TrainState` as a NumPy array keyed by its pytree path, plus
`__local_copies_agree__`, whether all of this process's devices hold the same values.

DATA_SHARES = 1 leaves the input pipeline alone. DATA_SHARES = N > 1 (single process only) makes
the loop's train iterator yield the concatenation of the N per-process streams that N processes
would read (`create_train_iterator(process_index=i, process_count=N)`), i.e. the global batch of
an N-process run: a one-process reference for a multi-process run.
"""

import runpy
import sys

import numpy as np


def concatenated_process_streams(real_create, num_shares: int):
    """A stand-in for `input_pipeline.create_train_iterator` yielding N processes' batches
    concatenated in process order (as `parallel.make_global_batch` lays them out)."""

    def create(data_config, *, global_batch_size, seed, start_step=0, **unused):
        streams = [
            real_create(
                data_config,
                global_batch_size=global_batch_size,
                seed=seed,
                start_step=start_step,
                process_index=index,
                process_count=num_shares,
            )
            for index in range(num_shares)
        ]
        while True:
            batches = [next(stream) for stream in streams]
            yield {"image": np.concatenate([batch["image"] for batch in batches], axis=0)}

    return create


def local_copy(leaf) -> tuple[np.ndarray, bool]:
    """(this process's copy of a replicated leaf, whether all its local device copies agree)."""
    import jax

    if not isinstance(leaf, jax.Array):
        return np.asarray(leaf), True
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if not leaf.is_fully_replicated:
        raise ValueError(f"expected a replicated train state, got sharding {leaf.sharding}")
    copies = [np.asarray(shard.data) for shard in leaf.addressable_shards]
    return copies[0], all(np.array_equal(copies[0], copy, equal_nan=True) for copy in copies)


def dump_state(state, path: str) -> None:
    import jax

    arrays, agree = {}, True
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        value, same = local_copy(leaf)
        arrays[jax.tree_util.keystr(key_path)] = value
        agree &= same
    np.savez(path, __local_copies_agree__=np.asarray(agree), **arrays)


def main() -> None:
    out_path, num_shares = sys.argv[1], int(sys.argv[2])
    sys.argv = [sys.argv[0], *sys.argv[3:]]

    from ilsgan_jax.train import loop

    real_train = loop.train_and_evaluate

    def train_and_dump(config, workdir):
        result = real_train(config, workdir)
        dump_state(result.state, out_path)
        return result

    # main() imports train_and_evaluate from the loop module when it runs, so it gets this one.
    loop.train_and_evaluate = train_and_dump
    if num_shares > 1:
        loop.input_pipeline.create_train_iterator = concatenated_process_streams(
            loop.input_pipeline.create_train_iterator, num_shares
        )
    runpy.run_module("ilsgan_jax.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
