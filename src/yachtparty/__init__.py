"""The Yachtparty handler pack (in progress; see issue 3)."""
