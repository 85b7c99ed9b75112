"""The `Accelerator` of a training run, and the launch settings this machine cannot honour, refused up front.

`accelerate launch --config_file <yaml>` passes its settings to the processes in the environment
(`ACCELERATE_USE_FSDP`, `ACCELERATE_USE_DEEPSPEED`, `ACCELERATE_MIXED_PRECISION`). FSDP and DeepSpeed need GPUs;
bf16 on a CPU without native bfloat16 units (AVX2 only: no AVX512-BF16 or AMX) runs about 10x slower than fp32
(measured on this project's CPU: README, "Speed on CPU"), so both are refused with a message instead of training
as something else than asked for.
"""

import logging
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, is_bf16_available, str_to_bool

from ..cli import UsageError

logger = logging.getLogger(__name__)

GPU_ONLY_LAUNCHES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def has_accelerator() -> bool:
    return torch.accelerator.is_available()


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU (AVX512-BF16 or AMX); False when torch cannot say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_mixed_precision(bf16: bool, use_cpu: bool, allow_slow_bf16: bool) -> None:
    """Refuse bf16 (from --bf16 or the launcher's mixed_precision) where it cannot run, or runs far slower."""
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    on_cpu = use_cpu or not has_accelerator()
    if launcher_precision == "fp16" and on_cpu:
        raise UsageError("the accelerate config asks for fp16 mixed precision, which needs a GPU: set it to 'no'")
    if not (bf16 or launcher_precision == "bf16"):
        return
    source = "--bf16" if bf16 else "the accelerate config's mixed_precision: bf16"
    if not on_cpu and not is_bf16_available(ignore_tpu=True):
        raise UsageError(f"{source}: this accelerator has no bfloat16 support; train in fp32 instead")
    if on_cpu and not cpu_has_native_bf16() and not allow_slow_bf16:
        raise UsageError(
            f"{source}: this CPU has no native bfloat16 (AVX2 only), where bf16 autocast runs about 10x slower than "
            "fp32; train in fp32 (drop it), or pass --allow_slow_bf16 to run it anyway"
        )


def check_launch(use_cpu: bool) -> None:
    """Refuse an accelerate config that needs GPUs on a machine (or with --use_cpu) without them."""
    for variable, name in GPU_ONLY_LAUNCHES.items():
        if str_to_bool(os.environ.get(variable, "false")) and (use_cpu or not has_accelerator()):
            raise UsageError(
                f"the accelerate config asks for {name}, which needs GPUs, and this run has none; for data parallel "
                "on CPU processes launch with configs/accelerate/multi_cpu.yaml"
            )


def build_accelerator(train_args) -> Accelerator:
    """The run's Accelerator: CPU when asked for or when no accelerator exists, the launcher's or --bf16's mixed
    precision, trackers and checkpoints under output_dir, a shuffle order that depends on (seed, epoch) only."""
    check_launch(train_args.use_cpu)
    check_mixed_precision(train_args.bf16, train_args.use_cpu, train_args.allow_slow_bf16)
    # Without an accelerator device, cpu=True is what turns `accelerate launch --multi_gpu` processes into one
    # gloo process group (MULTI_CPU); otherwise each process would train alone on its own copy.
    cpu = train_args.use_cpu or not has_accelerator()
    output_dir = Path(train_args.output_dir)
    accelerator = Accelerator(
        cpu=cpu,
        # Unset: the launcher's setting (`accelerate launch --mixed_precision` or its config file), else "no".
        mixed_precision="bf16" if train_args.bf16 else None,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        log_with=None if train_args.report_to == "none" else train_args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # The shuffle order depends on (seed, epoch) only: the same for any number of processes and on resume.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if cpu and accelerator.num_processes > 1 and accelerator.is_main_process:
        logger.info(f"no GPU in use: {accelerator.num_processes} processes train on CPU, joined by gloo")
    return accelerator
