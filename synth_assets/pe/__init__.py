"""Private Evolution (PE): privacy accounting (:mod:`.privacy`), the nearest-candidate vote (:mod:`.nn`)."""
