//! An image held in memory: used by the fuzz targets, by tests that mutate images, and by
//! callers that already have the bytes.

use super::{Storage, StorageMut};
use std::io;
use std::sync::RwLock;

/// A growable byte buffer behaving like a file.
#[derive(Debug, Default)]
pub struct MemStorage {
    data: RwLock<Vec<u8>>,
}

impl MemStorage {
    /// A storage holding `data`.
    pub fn new(data: Vec<u8>) -> Self {
        MemStorage {
            data: RwLock::new(data),
        }
    }

    /// A copy of the current contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Storage for MemStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        super::read_from_slice(&data, buf, offset)
    }
}

impl StorageMut for MemStorage {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        let start =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if end > data.len() {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.data
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .resize(len, 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_bounds() {
        let m = MemStorage::new(vec![1, 2, 3, 4]);
        let mut b = [0u8; 2];
        m.read_exact_at(&mut b, 2).unwrap();
        assert_eq!(b, [3, 4]);
        assert!(m.read_exact_at(&mut b, 3).is_err());
        assert!(m.read_exact_at(&mut b, u64::MAX).is_err());
        m.write_all_at(&[9, 9], 5).unwrap();
        assert_eq!(m.to_vec(), vec![1, 2, 3, 4, 0, 9, 9]);
        let mut z = [7u8; 4];
        m.read_at_zero_tail(&mut z, 5).unwrap();
        assert_eq!(z, [9, 9, 0, 0]);
    }
}
