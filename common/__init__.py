"""Shared plumbing for the lessons: prompt format, data, tokenisation, CLI and chat helpers.

Nothing here is the subject of a lesson: every PEFT method stays in its own folder.
Submodules import their heavy dependencies themselves, so `import common` is cheap.
"""
