"""Shared plumbing for the lessons: prompt format, data, models, training, inference and chat helpers.

Nothing here is the subject of a lesson: every PEFT method stays in its own folder.
Submodules import their heavy dependencies themselves, so `import common` is cheap.
"""

from .quiet import silence_library_noise

silence_library_noise()
