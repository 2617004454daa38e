"""The course's own small world: fictional people, a mini BLOOM pretrained on their biographies, and probes."""
