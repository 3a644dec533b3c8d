// --server-key and --client-key-file (SPEC §10), the same two flags with the same help in
// wsbridge-tail, wsbridge-send and wsbridge-replay. What they mean is in client/curve_client.h
// (CurveClientKeys::Load); this only declares them on a CLI11 app.
//
// Header-only, for the tools' main() (main thread, while the flags are parsed).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace wsbridge::tools {

struct CurveFlags {
  std::string server_key;       // Z85 or @FILE; "" with client_key_file "": no CURVE
  std::string client_key_file;  // this client's secret key file
};

// Adds both flags to `app`, in a help section of their own. `role`: the role this tool's key
// needs in the bridge's authorized keys file ("subscribe" or "send"), for the help text.
inline void AddCurveFlags(CLI::App& app, CurveFlags* flags, const std::string& role) {
  const char* group = "CURVE, for a bridge whose tcp endpoints are CURVE servers (both or neither)";
  app.add_option("--server-key", flags->server_key,
                 "the bridge's public key: 40 Z85 characters, or @FILE (e.g. the PREFIX.pub "
                 "of `wsbridge keygen --out PREFIX` made for its zmq.curve.secret_key_file)")
      ->type_name("KEY")
      ->group(group);
  app.add_option("--client-key-file", flags->client_key_file,
                 "this client's secret key file (e.g. a PREFIX.key of `wsbridge keygen --out "
                 "PREFIX`; refused when group or others may read it); its public key must be in "
                 "the bridge's zmq.curve.authorized_keys_file with role `" +
                     role + "` or `all`")
      ->type_name("FILE")
      ->group(group);
}

}  // namespace wsbridge::tools
