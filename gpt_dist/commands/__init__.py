"""One module per `gpt-dist` subcommand; see gpt_dist.cli."""
