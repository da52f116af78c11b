"""The core: seam types, content and flow loading, the matcher and the engine.

Nothing here imports ``telegram``, the Telegram door or the store's implementation.
"""
