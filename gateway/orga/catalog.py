"""The ids the Orga reference names: models, modalities and the current voices (reference §9).

A leaf module (no imports), so the config loader can check routes against these values
(`check-config`) and the emulator can validate with them, without an import cycle.
"""

MODELS: tuple[str, ...] = ("orga-1-beta",)
MODALITIES: tuple[str, ...] = ("audio", "video")
# Current voice ids from the SDK (OrgaVoices.ts), sent exactly as written (reference §9).
VOICES: tuple[str, ...] = (
    # Español
    "Sofía", "Juan", "Marta", "Emilio", "Clara", "Álvaro", "Lucía", "Ignacio", "Natalia",
    "Ricardo", "Teresa",
    # English
    "Victoria", "Ethan", "Chloe", "Harold", "Alex", "Hannah", "Valerie", "Max", "Adrian", "Emma",
    # Français
    "Julien", "Camille", "Chloé", "Aurélie", "Antoine", "Mathieu", "Bernard", "Élise", "Nadine",
    "Laurent",
    # Português
    "Bruno", "Mariana", "Carolina", "Joana", "André", "Rafael", "Gustavo", "Helena", "Henrique",
    # Italiano
    "Giada", "Marco", "Alessandro", "Matteo", "Davide", "Valentina", "Serena", "Roberto",
    "Lorenzo", "Paola",
)  # fmt: skip
