"""Selection policies of the block-sparse peers (one module each), in plain PyTorch: each turns
q, k into a plan for the shared index-guided executor (see ``s2o_kernels.block_plan``)."""
