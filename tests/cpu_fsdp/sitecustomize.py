"""Test support: FSDP on CPU processes, which accelerate never chooses itself (tests/train/test_fsdp.py).

On PYTHONPATH of an `accelerate launch` with an FSDP config, every launched process imports this module at
start-up. It changes one decision of accelerate (1.15): AcceleratorState keeps CPU processes that joined over
gloo as MULTI_CPU, DDP, even when the config asks for FSDP (it turns FSDP on only for GPUs and other
accelerators), so here such a state becomes FSDP with the plugin the Accelerator built from the config, as
accelerate does on a GPU. The rest is accelerate's and torch's own FSDP2: the Trainer's model is wrapped with
fully_shard, its parameters are DTensor shards, and accelerator.get_state_dict gathers them on the main process.
"""

import os

if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
    import accelerate.state
    from accelerate.utils import DistributedType

    _accelerate_init = accelerate.state.AcceleratorState.__init__

    def _init_with_cpu_fsdp(self, *args, fsdp_plugin=None, **kwargs):
        _accelerate_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            # what AcceleratorState.__init__ does for MULTI_GPU when ACCELERATE_USE_FSDP is set
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    accelerate.state.AcceleratorState.__init__ = _init_with_cpu_fsdp

    import accelerate.accelerator

    _get_state_dict = accelerate.accelerator.Accelerator.get_state_dict

    def _get_state_dict_saying_shards(self, model, unwrap=True):
        """accelerate's get_state_dict, after printing what this process holds of the first LoRA weight."""
        name, param = next((n, p) for n, p in model.named_parameters() if "lora_A" in n)
        local = param.to_local() if hasattr(param, "to_local") else param  # a DTensor's shard
        print(
            f"cpu_fsdp: process {self.process_index} holds {tuple(local.shape)} of {name} "
            f"{tuple(param.shape)} ({type(param).__name__})",
            flush=True,
        )
        return _get_state_dict(self, model, unwrap)

    accelerate.accelerator.Accelerator.get_state_dict = _get_state_dict_saying_shards
