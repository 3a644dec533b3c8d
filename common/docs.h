// Where a page of the documentation is: for the last line of every binary's --help.
// WSBRIDGE_DOCDIR is the installed docs folder, from GNUInstallDirs (CMakeLists.txt), given only
// to the files that print it (their folders' set_source_files_properties).
#pragma once

#include <string>

#ifndef WSBRIDGE_DOCDIR
#error "WSBRIDGE_DOCDIR undefined: list this file with WSBRIDGE_DOCDIR_DEFINITION in its CMakeLists"
#endif

namespace wsbridge {

// "Documentation: docs/<page> (installed: <docdir>/<page>)."
inline std::string DocsPointer(const std::string& page) {
  return "Documentation: docs/" + page + " in the source tree (installed: " WSBRIDGE_DOCDIR "/" +
         page + ").";
}

}  // namespace wsbridge
