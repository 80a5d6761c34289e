"""Everything that runs unattended: IMAP access, MIME parsing, matching, sync, scheduling and alerts."""
