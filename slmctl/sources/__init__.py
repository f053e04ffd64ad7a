"""Where models come from: the transports and the downloader.

The transports (:mod:`.hf`, :mod:`.ollama`, :mod:`.url`; :mod:`.transports` picks one for a reference,
:mod:`.base` is what they answer) turn a source reference (:mod:`slmctl.refs`) into the files of a
remote model; the downloader (:mod:`slmctl.sources.downloader`) fetches one file, resumable and
verified. Nothing here imports the store: the pull service puts what comes from here into it.
"""
