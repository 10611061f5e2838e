"""whale-kit: win identity-recognition competitions (humpback flukes, MAP@5)."""
