"""tokcomp-edge: vision encoders with static-ratio token compression, exported for edge GPUs.

Nothing heavy is imported here: `import tokcomp_edge` must stay cheap (the CLI imports it for --help).
"""

__version__ = "0.1.0"
