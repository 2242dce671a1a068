"""A DAVE (Discord audio/video end-to-end encryption) test harness with real crypto.

`mls` plays the MLS external sender that Discord's voice gateway is; `group` runs the
gateway's side of the group (key packages in, proposals out, the first commit wins,
commit/welcome relayed, transitions executed); `member` is a simulated call participant
built on `dave.Session`, who can encrypt and decrypt media frames.
"""
