"""The Dropout course's grading side: nbgrader configuration, the checks library, grading."""
