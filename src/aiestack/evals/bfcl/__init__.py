"""The Berkeley Function Calling Leaderboard (BFCL v4) through aiestack: data, AST checking, runs. See docs/evals.md."""
