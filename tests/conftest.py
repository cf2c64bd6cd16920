import os
import sys

# Tests never reach the network: a stray hub id fails at once instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP threads that
# wait on each other make them many times slower; subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A student, a math and a code teacher and prompts of both domains (tests/tiny.py), built once."""
    import tiny
    return tiny.make_world(tmp_path_factory.mktemp("world"))


# The tests that cover every version-sensitive call: the sharded loading and FSDP2, sharded
# checkpoints (save, load, resume), activation checkpointing, chat templates, generate,
# logits_to_keep, DDP. `pytest -m versions` runs them; CI runs them again at the oldest supported
# torch and transformers (.ci/run).
VERSIONS = {
    "test_scale.py": None, "test_fsdp.py": None,  # None: every test of the file
    "test_gopd.py": ["test_token_logprobs_match_naive_softmax_and_ignore_padding",
                     "test_token_logprobs_gradient_matches_naive_softmax",
                     "test_scoring_temperature_matches_the_sampled_distribution",
                     "test_rollout_masks_stop_at_eos_and_pads_after",
                     "test_training_moves_toward_the_teacher_and_logs_metrics",
                     "test_ddp_two_ranks_make_the_same_update_as_one_process[seq-mean-token-mean]",
                     "test_resume_after_interruption_matches_uninterrupted_run",
                     "test_teacher_with_its_own_template_scores_its_own_rendering",
                     "test_chat_prompts_need_a_chat_template",
                     "test_gradient_checkpointing_gives_the_same_update",
                     "test_rollouts_ignore_the_checkpoints_sampling_settings"],
    "test_evaluate.py": ["test_prompt_ids_is_what_generate_feeds_the_model",
                         "test_sample_ignores_the_checkpoints_generation_config",
                         "test_driver_end_to_end"],
    "test_toy.py": ["test_bundled_toy_world_loads"],
    "test_launch.py": ["test_every_preset_fits_on_8_gpus_in_the_mode_it_uses"],
}


def pytest_configure(config):
    config.addinivalue_line("markers", "versions: covers a call that differs between the supported "
                                       "torch and transformers releases")


def pytest_collection_modifyitems(config, items):
    """Mark VERSIONS. Under -m versions, a name listed there that a collected file does not have
    is an error (a renamed test would silently drop out of the oldest-version run)."""
    seen = set()
    for item in items:
        names = VERSIONS.get(item.path.name, [])
        if names is None or item.name in names:
            item.add_marker(pytest.mark.versions)
            seen.add((item.path.name, item.name))
    files = {item.path.name for item in items}
    lost = [f"{f}::{n}" for f, names in VERSIONS.items() if f in files for n in names or []
            if (f, n) not in seen]
    if lost and "versions" in config.getoption("markexpr"):
        raise pytest.UsageError(f"conftest.py VERSIONS names tests that do not exist: {lost}")
