"""Which real replays (paths under ``../shared/replays``) each browser flow puts where."""

# Real eligible games (two humans, versus, over a minute) for the default local source ...
LOCAL_GAMES = (
    "project-slippi__slippi-js/BH9.slp",
    "project-slippi__slippi-js/techTest.slp",
    "hohav__peppi/v2.0.slp",
)
# ... beside a truncated file peppi cannot read ("failed to fill whole buffer", SOURCES.md).
MALFORMED_REPLAY = "hohav__peppi/malformed/corrupt.slp"
# The games of the sources that the flows add later, one archive each.
SOURCES_FILE_GAMES = ("hohav__peppi/nintendont.slp",)
INBOX_GAMES = ("hohav__peppi/duplicate_game_end.slp",)
