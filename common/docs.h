// Where a page of the documentation is: for the last line of every binary's --help.
#pragma once

#include <string>

#ifndef WSBRIDGE_DOCDIR
#define WSBRIDGE_DOCDIR "/usr/local/share/doc/wsbridge"
#endif

namespace wsbridge {

// "Documentation: docs/<page> (installed: <docdir>/<page>)."
inline std::string DocsPointer(const std::string& page) {
  return "Documentation: docs/" + page + " in the source tree (installed: " WSBRIDGE_DOCDIR "/" +
         page + ").";
}

}  // namespace wsbridge
