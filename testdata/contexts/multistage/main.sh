#!/bin/sh
echo "hello from NAME"
