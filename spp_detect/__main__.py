"""``python -m spp_detect`` (also what ``torchrun -m spp_detect`` runs)."""

from .cli.main import cli

if __name__ == "__main__":
    cli(prog_name="spp-detect")
