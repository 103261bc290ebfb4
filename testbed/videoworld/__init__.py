"""The miniature video world: the image world's scenes as short clips, plus concepts only video has
(motion, a size that changes over time), with an exact detector per frame and over the clip."""
