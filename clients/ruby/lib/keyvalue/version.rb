# frozen_string_literal: true

# The gem's version, kept beside the Rust crate's.
module KeyValue
  VERSION = "0.1.0"
end
