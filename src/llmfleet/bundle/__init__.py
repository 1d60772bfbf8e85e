"""`llmfleet bundle`: everything a rollout installs, gathered on a connected machine.

`build` reads a spec (see `llmfleet.bundle.spec`) and fills a bundle folder (see
`llmfleet.bundle.build` for the layout); `verify` recomputes every checksum and signature
(`llmfleet.bundle.verify`).
"""
