// `wsbridge keygen [--out PREFIX]` (SPEC §10): a new CURVE key pair, printed as `public: <Z85>` and
// `secret: <Z85>` lines, or written to PREFIX.key (the secret key, mode 0600) and PREFIX.pub (the
// public key, 0644), each as its Z85 text and a newline. Neither file is overwritten if it
// exists (created with O_EXCL | O_NOFOLLOW).
//
// Called by main.cc when argv[1] is "keygen", before anything else (no configuration, no
// logging, no threads). Main thread only (it writes to stdout and stderr).
#pragma once

namespace wsbridge {

// argv[0] is the program, argv[1] "keygen". Returns the exit code: 0, or 2 after one line on
// stderr ("wsbridge keygen: ...").
int KeygenMain(int argc, char** argv);

}  // namespace wsbridge
